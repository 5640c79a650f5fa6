"""HeatmapCodec: encode/decode round trips, the princeton/mmpose/DARK decode rules, flip test."""

import math

import cv2
import numpy as np
import pytest
import torch

from d2ext.modeling.common import HeatmapCodec, flip_heatmaps, flip_indices, flip_test_average


def _random_points(n, k, low, high, seed=0):
    g = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand(n, k, 2, generator=g, dtype=torch.float64)


# ----------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("blur_kernel", [11, 7])
def test_dark_round_trip_within_0_05(blur_kernel):
    codec = HeatmapCodec(
        (64, 48), 2.0, unbiased_encoding=True, decode="dark", blur_kernel=blur_kernel
    )
    points = _random_points(8, 17, 6.0, 40.0)
    heatmaps, weights = codec.encode(points)
    coords, scores = codec.decode(heatmaps)
    assert weights.eq(1).all()
    err = (coords.double() - points).abs()
    assert err.max() < 0.05, err.max()
    # the peak of an exact sub-pixel Gaussian sampled at the nearest pixel: exp(-d^2/8), |d|<=0.71
    assert (scores > math.exp(-0.5 / 8) - 1e-6).all() and (scores <= 1).all()


def test_dark_recovers_a_correlated_gaussian():
    # with blur_kernel=1 (no modulation) the log-map is exactly quadratic, so the Taylor step with
    # its finite-difference gradient/Hessian lands on the centre; the cross term dxy matters here
    h, w = 32, 32
    centre = torch.tensor([15.3, 14.6], dtype=torch.float64)
    inv_cov = torch.tensor([[0.30, 0.18], [0.18, 0.25]], dtype=torch.float64)
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    d = torch.stack([xs, ys], dim=-1).double() - centre
    quad = torch.einsum("hwi,ij,hwj->hw", d, inv_cov, d)
    heatmaps = torch.exp(-0.5 * quad)[None, None]
    for kernel, tol in [(1, 1e-6), (11, 0.05)]:
        codec = HeatmapCodec((h, w), 2.0, decode="dark", blur_kernel=kernel)
        coords, _ = codec.decode(heatmaps)
        assert (coords[0, 0] - centre).abs().max() < tol, (kernel, coords)


def test_integer_encoding_quantisation_bounds():
    points = _random_points(4, 30, 3.0, 28.0, seed=1)
    # mmpose convention: the Gaussian sits on the nearest pixel centre floor(x + 0.5); its
    # neighbours tie, so no quarter step: decode == floor(x + 0.5), error <= 0.5 per axis
    mm = HeatmapCodec((32, 32), 1.0, decode="mmpose")
    coords, _ = mm.decode(mm.encode(points)[0])
    assert torch.equal(coords.double(), torch.floor(points + 0.5))
    assert (coords.double() - points).abs().max() <= 0.5
    # princeton: the Gaussian sits on the pixel containing x (floor(x)); its tie steps -0.25, then
    # +0.5: decode == floor(x) + 0.25, error <= 0.75 per axis
    pr = HeatmapCodec((32, 32), 1.0, decode="princeton")
    coords, _ = pr.decode(pr.encode(points)[0])
    assert torch.equal(coords.double(), torch.floor(points) + 0.25)
    assert (coords.double() - points).abs().max() <= 0.75


@pytest.mark.parametrize("convention", ["mmpose", "princeton"])
def test_unbiased_encoding_quarter_step_within_0_25(convention):
    # peak at the nearest pixel, unequal neighbours: one quarter step toward the point
    codec = HeatmapCodec((32, 32), 1.5, unbiased_encoding=True, decode=convention)
    points = _random_points(4, 30, 3.0, 28.0, seed=2)
    coords, _ = codec.decode(codec.encode(points)[0])
    err = (coords.double() - points).abs()
    assert err.max() <= 0.25 + 1e-6


# ----------------------------------------------------------------------------- the conventions
def test_conventions_differ_by_exactly_half_a_pixel():
    kw = dict(unbiased_encoding=True)
    pr = HeatmapCodec((24, 20), 1.0, decode="princeton", **kw)
    mm = HeatmapCodec((24, 20), 1.0, decode="mmpose", **kw)
    heatmaps = mm.encode(_random_points(5, 9, 3.0, 16.0, seed=3))[0]
    noise = torch.rand(5, 9, 24, 20, generator=torch.Generator().manual_seed(4))
    for maps in (heatmaps, noise):
        c_pr, s_pr = pr.decode(maps)
        c_mm, s_mm = mm.decode(maps)
        xy = c_mm.round()
        away = ((xy >= 2) & (xy[..., :1] <= 20 - 2) & (xy[..., 1:] <= 24 - 2)).all(-1)
        assert away.sum() >= 10
        assert torch.equal(c_pr[away] - c_mm[away], torch.full_like(c_mm[away], 0.5))
        assert torch.equal(s_pr, s_mm)


def test_hand_built_5x5_maps():
    maps = torch.zeros(1, 5, 5, 5)
    # ch 0: peak 0.9 at (x=2, y=2); right 0.5 > left 0.3, down 0.4 > up 0.2
    maps[0, 0] = torch.tensor(
        [
            [0, 0, 0, 0, 0],
            [0, 0.1, 0.2, 0.1, 0],
            [0, 0.3, 0.9, 0.5, 0],
            [0, 0.1, 0.4, 0.2, 0],
            [0, 0, 0, 0, 0],
        ]
    )
    # ch 1: peak 1.0 in the bottom-left corner (x=0, y=4), 0.5 right of it and above it
    maps[0, 1, 4, 0], maps[0, 1, 4, 1], maps[0, 1, 3, 0] = 1.0, 0.5, 0.5
    # ch 2: peak 1.0 at (x=3, y=1), left == right == 0.5, up 0.2, down 0.6
    maps[0, 2, 1, 3], maps[0, 2, 1, 2], maps[0, 2, 1, 4] = 1.0, 0.5, 0.5
    maps[0, 2, 0, 3], maps[0, 2, 2, 3] = 0.2, 0.6
    # ch 3: all negative, peak -0.5 at (2, 2); ch 4: all zero
    maps[0, 3] = -1.0
    maps[0, 3, 2, 2] = -0.5

    coords, scores = HeatmapCodec((5, 5), 1.0, decode="princeton").decode(maps)
    expected = [
        (2 + 0.25 + 0.5, 2 + 0.25 + 0.5),  # both steps +0.25, then +0.5
        # x: clamped left neighbour is the peak itself, 0.5 > 1.0 false -> -0.25;
        # y: clamped down neighbour is the peak, 1.0 > 0.5 -> +0.25
        (0 - 0.25 + 0.5, 4 + 0.25 + 0.5),
        (3 - 0.25 + 0.5, 1 + 0.25 + 0.5),  # the x tie steps -0.25 (`right > left` false)
        # NMS zeroes the 8 neighbours of the -0.5 peak; the top value is then 0 (first: x=1, y=1)
        # and a joint with value <= 0 is left unadjusted (no step, no +0.5)
        (1, 1),
        (0, 0),  # all zero: every pixel survives NMS, first is (0, 0), unadjusted
    ]
    assert coords[0].tolist() == [list(e) for e in expected]
    assert scores[0].tolist() == pytest.approx([0.9, 1.0, 1.0, 0.0, 0.0])

    coords, scores = HeatmapCodec((5, 5), 1.0, decode="mmpose").decode(maps)
    expected = [
        (2.25, 2.25),
        (0, 4),  # x=0: no x step (1 < x fails), y=4: no y step (y < H - 1 fails)
        (3, 1),  # x tie: sign 0; y=1: no y step (1 < y fails)
        (-1, -1),  # max <= 0
        (-1, -1),
    ]
    assert coords[0].tolist() == [list(e) for e in expected]
    assert scores[0].tolist() == pytest.approx([0.9, 1.0, 1.0, -0.5, 0.0])


def test_mmpose_and_dark_border_bounds():
    h, w = 12, 10
    peaks = [(1, 5), (2, 5), (w - 2, 5), (5, 0), (5, 1), (0, 5), (w - 1, h - 1), (5, h - 2)]
    peaks += [(w - 3, h - 3)]
    # Gaussians centred 0.3 px right of and below each peak pixel: unequal neighbours, +0.25 steps
    points = torch.tensor([[[x + 0.3, y + 0.3] for x, y in peaks]])
    mm = HeatmapCodec((h, w), 1.0, unbiased_encoding=True, decode="mmpose")
    maps = mm.encode(points)[0]
    coords, _ = mm.decode(maps)
    # x step iff 1 < x < W - 1 and 0 < y; y step iff 1 < y < H - 1 and 0 < x
    expected = [
        (1, 5.25),
        (2.25, 5.25),
        (w - 2 + 0.25, 5.25),
        (5, 0),
        (5.25, 1),
        (0, 5),
        (w - 1, h - 1),
        (5.25, h - 2 + 0.25),
        (w - 3 + 0.25, h - 3 + 0.25),
    ]
    assert coords[0].tolist() == [list(e) for e in expected]
    # DARK refines only where 1 < x < W - 2 and 1 < y < H - 2
    dark = HeatmapCodec((h, w), 1.0, decode="dark", blur_kernel=3)
    coords, _ = dark.decode(maps)
    refined = torch.tensor([1 < x < w - 2 and 1 < y < h - 2 for x, y in peaks])
    assert refined.sum() == 2
    moved = (coords[0] != torch.tensor(peaks, dtype=coords.dtype)).any(-1)
    assert torch.equal(moved, refined)


def test_dark_blur_matches_cv2_gaussian_blur():
    # mmpose's modulation: zero-pad by k // 2, cv2.GaussianBlur((k, k), 0), crop, keep the max
    maps = torch.rand(2, 3, 17, 13, generator=torch.Generator().manual_seed(5))
    for k in (3, 5, 7, 9, 11):
        b = k // 2
        expected = np.empty(maps.shape, dtype=np.float32)
        for i in range(2):
            for j in range(3):
                m = maps[i, j].numpy()
                padded = np.pad(m, b)
                blurred = cv2.GaussianBlur(padded, (k, k), 0)[b:-b, b:-b]
                expected[i, j] = blurred * (m.max() / blurred.max())
        ours = HeatmapCodec((17, 13), 2.0, decode="dark", blur_kernel=k)._blur(maps)
        np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- encode
def test_integer_gaussian_values_and_window():
    # princeton, sigma 1: centre pixel (row 9, col 5) for x=5.7, y=9.2; values exp(-d^2 / 2) on
    # the (6 sigma + 3) = 9 px patch (|offset| <= 4), zero beyond
    codec = HeatmapCodec((16, 16), 1.0, decode="princeton")
    maps, weights = codec.encode(torch.tensor([[[5.7, 9.2]]]))
    m = maps[0, 0]
    assert weights.tolist() == [[1.0]]
    assert m[9, 5] == 1.0 and m.max() == 1.0
    assert m[9, 6].item() == pytest.approx(math.exp(-0.5))
    assert m[10, 6].item() == pytest.approx(math.exp(-1.0))
    assert m[9, 1].item() == pytest.approx(math.exp(-8.0))
    assert m[13, 9].item() == pytest.approx(math.exp(-16.0))  # the patch corner
    assert m[9, 0] == 0 and m[14, 5] == 0 and m[9, 10] == 0
    assert (m > 0).sum() == 9 * 9  # rows 5..13, columns 1..9
    # mmpose convention rounds to the nearest pixel centre: x=5.5 -> column 6
    maps, _ = HeatmapCodec((16, 16), 1.0, decode="mmpose").encode(torch.tensor([[[5.5, 9.2]]]))
    assert maps[0, 0, 9, 6] == 1.0


def test_target_weights_invisible_and_out_of_map():
    codec = HeatmapCodec((16, 20), 2.0, decode="mmpose")
    r = 3 * 2.0
    points = torch.tensor(
        [
            [
                [10.0, 8.0],  # inside
                [10.0, 8.0],  # inside but invisible
                [-1.0, 8.0],  # 1 px left of the map: clipped Gaussian, weight 1
                [-r, 8.0],  # centre exactly 3 sigma outside: still weighted
                [-r - 1, 8.0],  # beyond 3 sigma on x
                [10.0, 15 + r + 1],  # beyond 3 sigma below the last row
                [float("nan"), 3.0],
                [float("inf"), 3.0],
            ]
        ]
    )
    visible = torch.tensor([[1, 0, 1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    maps, weights = codec.encode(points, visible)
    assert weights.tolist() == [[1, 0, 1, 1, 0, 0, 0, 0]]
    assert weights.dtype == torch.float32 and maps.dtype == torch.float32
    assert maps.shape == (1, 8, 16, 20) and torch.isfinite(maps).all()
    peaks = maps.flatten(2).amax(-1)[0]
    assert peaks[0] == 1.0
    assert peaks[2].item() == pytest.approx(math.exp(-1 / 8))  # column 0 is 1 px from x=-1
    assert peaks[3].item() == pytest.approx(math.exp(-(r**2) / 8))  # column 0, 6 px away
    assert (peaks[[1, 4, 5, 6, 7]] == 0).all()
    # visible given as 0/1 numbers works the same, None means all visible
    assert torch.equal(codec.encode(points, visible.float())[1], weights)
    assert codec.encode(points[:, :1])[1].tolist() == [[1.0]]


# ----------------------------------------------------------------------------- flip test
FLIP_MAP = [(1, 2), (3, 4)]


def _flip_points(points, shift_width):
    """Mirror x -> shift_width - x and swap the symmetric keypoints (an involution)."""
    flipped = points.clone()
    flipped[..., 0] = shift_width - points[..., 0]
    return flipped[:, flip_indices(points.shape[1], FLIP_MAP)]


def test_flip_indices_and_shift_by_hand():
    assert flip_indices(6, FLIP_MAP) == [0, 2, 1, 4, 3, 5]
    maps = torch.arange(8.0).view(1, 2, 1, 4)  # ch0 [0 1 2 3], ch1 [4 5 6 7]
    out = flip_heatmaps(maps, [(0, 1)], shift=False)
    assert out[0, :, 0].tolist() == [[7, 6, 5, 4], [3, 2, 1, 0]]
    out = flip_heatmaps(maps, [(0, 1)], shift=True)  # one pixel right, column 0 kept
    assert out[0, :, 0].tolist() == [[7, 7, 6, 5], [3, 3, 2, 1]]


def test_flip_round_trip_mmpose_convention():
    h, w = 12, 16
    codec = HeatmapCodec((h, w), 1.5, unbiased_encoding=True, decode="mmpose")
    points = _random_points(3, 5, 2.0, 11.0, seed=6)
    target = codec.encode(points)[0]
    # without shift the heatmap flip mirrors pixel index u -> W - 1 - u
    back = flip_heatmaps(codec.encode(_flip_points(points, w - 1))[0], FLIP_MAP, shift=False)
    torch.testing.assert_close(back, target, atol=1e-6, rtol=0)
    # with the 1-pixel shift it mirrors u -> W - u (column 0 is a copy, not part of the flip)
    flipped_maps = codec.encode(_flip_points(points, w))[0]
    back = flip_heatmaps(flipped_maps, FLIP_MAP, shift=True)
    torch.testing.assert_close(back[..., 1:], target[..., 1:], atol=1e-6, rtol=0)
    unshifted = flip_heatmaps(flipped_maps, FLIP_MAP, shift=False)
    assert torch.equal(back[..., 0], unshifted[..., 0])
    assert torch.equal(back[..., 1:], unshifted[..., :-1])
    assert not torch.allclose(unshifted, target, atol=1e-3)
    torch.testing.assert_close(
        flip_test_average(target, flipped_maps, FLIP_MAP)[..., 1:],
        target[..., 1:],
        atol=1e-6,
        rtol=0,
    )


def test_flip_round_trip_princeton_convention():
    # princeton's pixel areas: an image flip is x -> W - x, and the integer encoding flips exactly
    h, w = 12, 16
    codec = HeatmapCodec((h, w), 1.0, decode="princeton")
    points = _random_points(3, 5, 2.0, 11.0, seed=7)
    target = codec.encode(points)[0]
    back = flip_heatmaps(codec.encode(_flip_points(points, w))[0], FLIP_MAP, shift=False)
    assert torch.equal(back, target)
    assert torch.equal(codec.decode(back)[0], codec.decode(target)[0])


# ----------------------------------------------------------------------------- robustness
@pytest.mark.parametrize("mode", ["princeton", "mmpose", "dark"])
def test_degenerate_heatmaps_give_finite_output(mode):
    codec = HeatmapCodec((9, 11), 2.0, decode=mode)
    spike = torch.full((9, 11), -1.0)
    spike[4, 5] = 0.01  # positive peak whose blur is negative everywhere
    maps = torch.stack(
        [torch.zeros(9, 11), torch.full((9, 11), 0.3), torch.full((9, 11), -2.0), spike]
    )
    coords, scores = codec.decode(maps[None])
    assert torch.isfinite(coords).all() and torch.isfinite(scores).all()
    if mode != "princeton":
        assert coords[0, 0].tolist() == [-1, -1]


@pytest.mark.parametrize("mode", ["princeton", "mmpose", "dark"])
def test_empty_batch(mode):
    codec = HeatmapCodec((8, 6), 1.0, decode=mode)
    maps, weights = codec.encode(torch.zeros(0, 4, 2))
    assert maps.shape == (0, 4, 8, 6) and weights.shape == (0, 4)
    coords, scores = codec.decode(maps)
    assert coords.shape == (0, 4, 2) and scores.shape == (0, 4)


def test_batched_decode_matches_per_item_and_float64():
    noise = torch.rand(4, 6, 16, 16, generator=torch.Generator().manual_seed(8))
    for mode in ("princeton", "mmpose", "dark"):
        codec = HeatmapCodec((16, 16), 2.0, unbiased_encoding=True, decode=mode)
        maps = codec.encode(_random_points(4, 6, 4.0, 11.0, seed=8))[0] + 0.01 * noise
        coords, scores = codec.decode(maps)
        for i in range(4):
            c, s = codec.decode(maps[i : i + 1])
            assert torch.equal(c, coords[i : i + 1]) and torch.equal(s, scores[i : i + 1])
        c64, _ = codec.decode(maps.double())
        assert c64.dtype == torch.float64
        torch.testing.assert_close(c64.float(), coords, atol=1e-3, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    points = _random_points(4, 17, 6.0, 40.0, seed=9)
    for mode in ("princeton", "mmpose", "dark"):
        codec = HeatmapCodec((48, 48), 2.0, unbiased_encoding=mode == "dark", decode=mode)
        maps, weights = codec.encode(points)
        maps_cuda, weights_cuda = codec.encode(points.cuda())
        torch.testing.assert_close(maps_cuda.cpu(), maps, atol=1e-6, rtol=0)
        assert torch.equal(weights_cuda.cpu(), weights)
        coords, scores = codec.decode(maps)
        coords_cuda, scores_cuda = codec.decode(maps.cuda())
        torch.testing.assert_close(coords_cuda.cpu(), coords, atol=1e-4, rtol=0)
        torch.testing.assert_close(scores_cuda.cpu(), scores)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="decode must be one of"):
        HeatmapCodec((8, 8), 1.0, decode="argmax")
    for sigma in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="sigma"):
            HeatmapCodec((8, 8), sigma)
    for kernel in (10, 0, -3, 3.0):
        with pytest.raises(ValueError, match="blur_kernel"):
            HeatmapCodec((8, 8), 1.0, blur_kernel=kernel)
    for size in ((8,), (0, 8), (8, 8.0), (8, 8, 8)):
        with pytest.raises(ValueError, match="heatmap_size"):
            HeatmapCodec(size, 1.0)
    codec = HeatmapCodec((8, 8), 1.0)
    with pytest.raises(ValueError, match="keypoints must be"):
        codec.encode(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="keypoints must be"):
        codec.encode(torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match="visible must be"):
        codec.encode(torch.zeros(2, 3, 2), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="4-D"):
        codec.decode(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="floating-point"):
        codec.decode(torch.zeros(1, 3, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="heatmap_size"):
        codec.decode(torch.zeros(1, 3, 8, 9))
    with pytest.raises(ValueError, match="out of range"):
        flip_heatmaps(torch.zeros(1, 3, 8, 8), [(0, 3)])
    with pytest.raises(ValueError, match="repeats"):
        flip_indices(4, [(0, 1), (1, 2)])
    with pytest.raises(ValueError, match="same shape"):
        flip_test_average(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 7), [])
