"""One heatmap codec for every heatmap model of d2ext: keypoints <-> per-keypoint Gaussian maps.

Encode draws one Gaussian of peak 1 per keypoint (``(N, K, H, W)`` maps, one set per instance:
crops or RoIs), either centred at the nearest integer pixel (the Stacked Hourglass / Simple
Baselines targets) or at the exact sub-pixel point (DARK's unbiased encoding). Decode takes the
argmax and refines it in one of three published ways, selected by ``decode``:

* ``"princeton"`` - princeton-vl/pytorch_stacked_hourglass ``HeatmapParser``: a 3x3 max-pool NMS,
  the top-1 peak, then a quarter-pixel step on each axis toward the higher of the two neighbours
  (neighbour indices clamped at the border; a tie steps by -0.25 because the original tests
  ``right > left``), then +0.5 on both axes. A joint whose top value after NMS is <= 0 is left
  unadjusted: its integer argmax, no step, no +0.5.
* ``"mmpose"`` - mmpose ``MSRAHeatmap`` (``get_heatmap_maximum`` + ``refine_keypoints``): argmax,
  then ``0.25 * sign(right - left)`` (no step on a tie), only where ``1 < x < W - 1 and 0 < y``
  for the x step and ``1 < y < H - 1 and 0 < x`` for the y step (mmpose's exact bounds). No
  +0.5. A map whose maximum is <= 0 decodes to (-1, -1).
* ``"dark"`` - mmpose ``refine_keypoints_dark`` (Zhang et al., DARK, CVPR 2020): the map is
  blurred with OpenCV's Gaussian kernel of size ``blur_kernel`` (``cv2.GaussianBlur(k, 0)``: the
  fixed table for k <= 9, else sigma = 0.3 * ((k - 1) / 2 - 1) + 0.8) over zero padding,
  rescaled to keep its maximum, clamped at 1e-10 and log-ed; where ``1 < x < W - 2 and
  1 < y < H - 2`` the argmax moves by ``-Hessian^-1 @ gradient`` (central differences, 2-pixel
  stencils for the second derivatives), skipped when the Hessian is singular. Same coordinate
  convention and (-1, -1) rule as ``"mmpose"``.

Coordinate conventions (xy in heatmap pixels, x along W). ``"mmpose"``/``"dark"``: pixel (row i,
column j) has its centre at (j, i); the map spans [-0.5, W - 0.5] x [-0.5, H - 0.5].
``"princeton"``: pixel (i, j) covers [j, j + 1) x [i, i + 1), centre (j + 0.5, i + 0.5); the map
spans [0, W] x [0, H]. On the same heatmaps the two conventions differ by exactly half a pixel
wherever they take the same step (peak > 0, unequal neighbours, 2 <= x <= W - 2, 2 <= y <= H - 2).
``encode`` reads keypoints in the codec's own convention, so encode -> decode round-trips:
princeton's integer centre is the pixel containing the point (``floor(x)``, as ``int(x)`` in its
``GenerateHeatmap``), mmpose's the nearest pixel centre (``floor(x + 0.5)``).

Gaussians (peak 1, the product of the x and y profiles). Integer-centred: ``exp(-d^2 /
(2 sigma^2))`` on the pixels within ``3 sigma + 1`` of the centre on each axis, zero beyond
(princeton's ``6 sigma + 3`` patch; its ``GenerateHeatmap`` up to float rounding for integer
sigma, which it sets to ``output_res / 64``). Unbiased: the same formula at the exact centre over
the whole map (mmpose's ``generate_unbiased_gaussian_heatmaps``).

Target weights. 1 for a visible keypoint with finite coordinates whose Gaussian centre is at
most ``3 sigma`` outside the map on both axes (``-3 sigma <= c <= W - 1 + 3 sigma`` in pixel-index
units, so some pixel centre lies within its 3-sigma support); else 0 and an all-zero heatmap.
Points just outside the map keep weight 1 and their clipped Gaussian, as in mmpose.

Flip test. :func:`flip_heatmaps` mirrors maps along W and swaps symmetric keypoints; ``shift``
moves the result one pixel right (mmpose's ``shift_heatmap``; column 0 keeps its value). Without
shift a heatmap flip maps pixel-index u to W - 1 - u (princeton's exact image flip, since its
pixel areas align with the input's); with shift, u to W - u, the nearer match to an input flip
under mmpose's ``x / stride`` mapping (W - 1/stride - u). :func:`flip_test_average` averages.

Everything is batched torch (no loop over keypoints) and runs on the tensors' device; all-zero or
constant heatmaps decode to finite values. ``decode`` traces (TorchScript, ONNX export) with the
same results: under tracing princeton's NMS runs on every map instead of only the low ones.
"""

import math
from typing import List, Optional, Sequence, Tuple

import cv2
import torch
from torch.nn import functional as F

__all__ = ["HeatmapCodec", "flip_heatmaps", "flip_indices", "flip_test_average"]

DECODE_MODES = ("princeton", "mmpose", "dark")


def _cv2_gaussian_kernel(size: int) -> List[float]:
    """The 1-D kernel ``cv2.GaussianBlur(img, (size, size), 0)`` applies on each axis (OpenCV's
    fixed kernels for sizes <= 9, a sigma derived from the size above)."""
    return cv2.getGaussianKernel(size, 0)[:, 0].tolist()


def _gather(flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor, width: int) -> torch.Tensor:
    """``flat[n, k, y * width + x]`` for (N, K, P) integer ``x``, ``y`` (already in range)."""
    return flat.gather(-1, y * width + x)


def _check_heatmaps(heatmaps: torch.Tensor, name: str = "heatmaps") -> None:
    if not isinstance(heatmaps, torch.Tensor) or heatmaps.dim() != 4:
        shape = tuple(heatmaps.shape) if hasattr(heatmaps, "shape") else type(heatmaps).__name__
        raise ValueError(f"{name} must be a 4-D (N, K, H, W) tensor, got {shape}")
    if not heatmaps.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {heatmaps.dtype}")


class HeatmapCodec:
    """Encode keypoints as Gaussian heatmaps and decode heatmaps back to sub-pixel keypoints.

    Args:
        heatmap_size: (H, W) of the heatmaps.
        sigma: Gaussian standard deviation in heatmap pixels (princeton: ``output_res / 64``).
        unbiased_encoding: centre the Gaussian at the exact sub-pixel point (DARK) instead of
            the integer pixel.
        decode: ``"princeton"``, ``"mmpose"`` or ``"dark"`` (see the module docstring); also
            selects the coordinate convention of both ``encode``'s input and ``decode``'s output.
        blur_kernel: odd size of DARK's modulation blur (11 pairs with sigma 2 in mmpose).
    """

    def __init__(
        self,
        heatmap_size: Tuple[int, int],
        sigma: float,
        *,
        unbiased_encoding: bool = False,
        decode: str = "princeton",
        blur_kernel: int = 11,
    ):
        size = tuple(heatmap_size)
        if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
            raise ValueError(f"heatmap_size must be two positive ints (H, W), got {heatmap_size}")
        if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma must be a finite number > 0, got {sigma}")
        if decode not in DECODE_MODES:
            raise ValueError(f"decode must be one of {DECODE_MODES}, got {decode!r}")
        if not isinstance(blur_kernel, int) or blur_kernel < 1 or blur_kernel % 2 == 0:
            raise ValueError(f"blur_kernel must be a positive odd int, got {blur_kernel}")
        self.heatmap_size = size
        self.sigma = float(sigma)
        self.unbiased_encoding = bool(unbiased_encoding)
        self.decode_mode = decode
        self.blur_kernel = blur_kernel
        # coordinate of pixel index 0's centre in this convention
        self.pixel_offset = 0.5 if decode == "princeton" else 0.0

    def __repr__(self) -> str:
        return (
            f"HeatmapCodec(heatmap_size={self.heatmap_size}, sigma={self.sigma}, "
            f"unbiased_encoding={self.unbiased_encoding}, decode={self.decode_mode!r}, "
            f"blur_kernel={self.blur_kernel})"
        )

    # ------------------------------------------------------------------ encode
    def encode(
        self, keypoints: torch.Tensor, visible: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            keypoints: (N, K, 2) float xy in heatmap pixels, in this codec's convention.
            visible: (N, K) bool (or 0/1 numbers), None = all visible.

        Returns:
            heatmaps: (N, K, H, W) float32, peak 1 (where the centre pixel is in the map).
            target_weights: (N, K) float32, 0 for invisible, non-finite and out-of-map points.
        """
        keypoints = torch.as_tensor(keypoints)
        if keypoints.dim() != 3 or keypoints.shape[-1] != 2:
            raise ValueError(f"keypoints must be (N, K, 2) xy, got {tuple(keypoints.shape)}")
        if not (keypoints.is_floating_point() or keypoints.dtype in (torch.int32, torch.int64)):
            raise ValueError(f"keypoints must be real numbers, got {keypoints.dtype}")
        dtype = torch.float64 if keypoints.dtype == torch.float64 else torch.float32
        keypoints = keypoints.to(dtype)
        n, k = keypoints.shape[:2]
        if visible is None:
            visible = torch.ones((n, k), dtype=torch.bool, device=keypoints.device)
        else:
            visible = torch.as_tensor(visible, device=keypoints.device)
            if tuple(visible.shape) != (n, k):
                raise ValueError(f"visible must be (N, K) = {(n, k)}, got {tuple(visible.shape)}")
            visible = visible > 0 if visible.dtype != torch.bool else visible
        height, width = self.heatmap_size
        radius = 3.0 * self.sigma

        index = keypoints - self.pixel_offset  # pixel-index units: pixel j's centre is j
        centre = index if self.unbiased_encoding else torch.floor(index + 0.5)
        finite = torch.isfinite(centre).all(dim=-1)
        centre = torch.where(finite[..., None], centre, torch.zeros_like(centre))
        cx, cy = centre[..., 0], centre[..., 1]
        inside = (cx >= -radius) & (cx <= width - 1 + radius)
        inside &= (cy >= -radius) & (cy <= height - 1 + radius)
        keep = visible & finite & inside

        xs = torch.arange(width, dtype=centre.dtype, device=centre.device)
        ys = torch.arange(height, dtype=centre.dtype, device=centre.device)
        dx = xs - cx[..., None]  # (N, K, W)
        dy = ys - cy[..., None]  # (N, K, H)
        # separable: exp(-(dx^2 + dy^2) / 2s^2) as an outer product of the two 1-D profiles
        gx = torch.exp(-(dx**2) / (2 * self.sigma**2)) * keep[..., None]
        gy = torch.exp(-(dy**2) / (2 * self.sigma**2))
        if not self.unbiased_encoding:
            # princeton's (6 sigma + 3)-wide patch: |offset| <= 3 sigma + 1 on each axis
            gx = gx * (dx.abs() <= radius + 1)
            gy = gy * (dy.abs() <= radius + 1)
        heatmaps = gy[..., :, None] * gx[..., None, :]  # zero for keep == False via gx
        return heatmaps.to(torch.float32), keep.to(torch.float32)

    # ------------------------------------------------------------------ decode
    @torch.no_grad()
    def decode(self, heatmaps: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            heatmaps: (N, K, H, W) float, H and W equal to ``heatmap_size``.

        Returns:
            coords: (N, K, 2) xy in heatmap pixels, in this codec's convention.
            scores: (N, K) the peak values (princeton: the top value after its NMS).
        """
        _check_heatmaps(heatmaps)
        if tuple(heatmaps.shape[-2:]) != self.heatmap_size:
            raise ValueError(
                f"heatmaps are {tuple(heatmaps.shape[-2:])}, codec heatmap_size is "
                f"{self.heatmap_size}"
            )
        if self.decode_mode == "princeton":
            return self._decode_princeton(heatmaps)
        scores, x, y = self._argmax(heatmaps)
        if self.decode_mode == "mmpose":
            offset = self._quarter_step_mmpose(heatmaps, x, y)
        else:
            offset = self._dark_step(heatmaps, x, y, scores > 0)
        coords = torch.stack([x, y], dim=-1).to(heatmaps.dtype) + offset
        coords = torch.where((scores > 0)[..., None], coords, torch.full_like(coords, -1.0))
        return coords, scores

    @staticmethod
    def _argmax(heatmaps: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Peak value and first-occurrence argmax (x, y), each (N, K)."""
        flat = heatmaps.flatten(2)
        index = flat.argmax(dim=-1)
        scores = flat.gather(-1, index[..., None])[..., 0]
        width = heatmaps.shape[-1]
        return scores, index % width, torch.div(index, width, rounding_mode="floor")

    def _decode_princeton(self, heatmaps: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        height, width = heatmaps.shape[-2:]
        scores, x, y = self._argmax(heatmaps)
        # the 3x3 NMS cannot change a positive top-1 (the global max is its own 3x3 max and
        # survives, ties included), so it only runs on the maps whose max is <= 0
        low = scores <= 0
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            # an exported graph has no data-dependent branch: NMS every map, keep it where low
            # (the same per-map max-pool and first-occurrence argmax as below)
            peaks = F.max_pool2d(heatmaps, 3, stride=1, padding=1) == heatmaps
            nms = self._argmax(heatmaps * peaks)
            scores, x, y = (torch.where(low, a, b) for a, b in zip(nms, (scores, x, y)))
        elif bool(low.any()):
            maps = heatmaps[low][:, None]  # (M, 1, H, W)
            peaks = F.max_pool2d(maps, 3, stride=1, padding=1) == maps
            low_scores, low_x, low_y = self._argmax((maps * peaks).transpose(0, 1))
            scores, x, y = scores.clone(), x.clone(), y.clone()
            scores[low], x[low], y[low] = low_scores[0], low_x[0], low_y[0]
        # the step compares the neighbours of the raw (not NMS-ed) map, indices clamped
        flat = heatmaps.flatten(2)
        xn = torch.stack([(x + 1).clamp(max=width - 1), (x - 1).clamp(min=0), x, x], dim=-1)
        yn = torch.stack([y, y, (y + 1).clamp(max=height - 1), (y - 1).clamp(min=0)], dim=-1)
        right, left, down, up = _gather(flat, xn, yn, width).unbind(-1)
        quarter = heatmaps.new_tensor(0.25)
        step_x = torch.where(right > left, quarter, -quarter)
        step_y = torch.where(down > up, quarter, -quarter)
        step = torch.stack([step_x, step_y], dim=-1)
        coords = torch.stack([x, y], dim=-1).to(heatmaps.dtype)
        adjusted = (scores > 0)[..., None]
        return torch.where(adjusted, coords + step + 0.5, coords), scores

    @staticmethod
    def _quarter_step_mmpose(heatmaps: torch.Tensor, x: torch.Tensor, y: torch.Tensor):
        height, width = heatmaps.shape[-2:]
        xr, xl = (x + 1).clamp(max=width - 1), (x - 1).clamp(min=0)
        yd, yu = (y + 1).clamp(max=height - 1), (y - 1).clamp(min=0)
        values = _gather(
            heatmaps.flatten(2),
            torch.stack([xr, xl, x, x], dim=-1),
            torch.stack([y, y, yd, yu], dim=-1),
            width,
        )
        right, left, down, up = values.unbind(-1)
        # mmpose refine_keypoints: x step iff 1 < x < W - 1 and 0 < y; y step iff 1 < y < H - 1
        # and 0 < x (the peaks at -1 of maps with max <= 0 fail both)
        x_ok = (x > 1) & (x < width - 1) & (y > 0)
        y_ok = (y > 1) & (y < height - 1) & (x > 0)
        step_x = torch.where(x_ok, torch.sign(right - left), torch.zeros_like(right))
        step_y = torch.where(y_ok, torch.sign(down - up), torch.zeros_like(down))
        return 0.25 * torch.stack([step_x, step_y], dim=-1)

    def _blur(self, heatmaps: torch.Tensor) -> torch.Tensor:
        """DARK's modulation: cv2's Gaussian blur over zero padding, rescaled to keep the max."""
        height, width = heatmaps.shape[-2:]
        size = self.blur_kernel
        kernel = heatmaps.new_tensor(_cv2_gaussian_kernel(size))

        def banded(length: int) -> torch.Tensor:
            # (length, length) matrix of the 1-D blur over zero padding: out = B @ in
            d = torch.arange(length, device=heatmaps.device)
            d = d[None, :] - d[:, None] + size // 2
            inside = (d >= 0) & (d < size)
            return torch.where(inside, kernel[d.clamp(0, size - 1)], kernel.new_zeros(()))

        # two matmuls with banded matrices: the same sums as a separable conv, ~5x faster on CPU
        maps = banded(height) @ heatmaps @ banded(width).T
        origin_max = heatmaps.amax(dim=(-2, -1), keepdim=True)
        blurred_max = maps.amax(dim=(-2, -1), keepdim=True)
        # a map whose blur has max 0 (mmpose: 0/0 = NaN) becomes flat: no refinement step
        nonzero = blurred_max != 0
        scale = origin_max / torch.where(nonzero, blurred_max, torch.ones_like(blurred_max))
        return maps * torch.where(nonzero, scale, torch.zeros_like(scale))

    def _dark_step(
        self, heatmaps: torch.Tensor, x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        height, width = heatmaps.shape[-2:]
        blurred = self._blur(heatmaps).flatten(2)
        # stencil (dx, dy) offsets: centre, +-1 and +-2 on each axis, the four diagonals
        offsets = [(0, 0), (1, 0), (-1, 0), (2, 0), (-2, 0), (0, 1), (0, -1), (0, 2), (0, -2)]
        offsets += [(1, 1), (1, -1), (-1, 1), (-1, -1)]
        off = torch.tensor(offsets, device=heatmaps.device)
        xs = (x[..., None] + off[:, 0]).clamp(0, width - 1)
        ys = (y[..., None] + off[:, 1]).clamp(0, height - 1)
        # clamp and log only the 13 stencil values (elementwise, so the same as on the whole map)
        v = _gather(blurred, xs, ys, width).clamp(min=1e-10).log().unbind(-1)
        c, r1, l1, r2, l2, d1, u1, d2, u2, dr, ur, dl, ul = v
        gx = 0.5 * (r1 - l1)
        gy = 0.5 * (d1 - u1)
        hxx = 0.25 * (r2 - 2 * c + l2)
        hyy = 0.25 * (d2 - 2 * c + u2)
        hxy = 0.25 * (dr - ur - dl + ul)
        det = hxx * hyy - hxy**2
        ok = valid & (x > 1) & (x < width - 2) & (y > 1) & (y < height - 2) & (det != 0)
        det = torch.where(ok, det, torch.ones_like(det))
        # -H^-1 g with H^-1 = [[hyy, -hxy], [-hxy, hxx]] / det
        offset = torch.stack([-(hyy * gx - hxy * gy) / det, -(hxx * gy - hxy * gx) / det], dim=-1)
        ok = ok[..., None] & torch.isfinite(offset)
        return torch.where(ok, offset, torch.zeros_like(offset))


def flip_indices(num_keypoints: int, flip_map: Sequence[Tuple[int, int]]) -> List[int]:
    """The channel permutation of a horizontal flip: ``flip_map`` pairs swapped, others kept.

    ``flip_map`` holds index pairs, e.g. from D2's ``keypoint_flip_map`` metadata mapped to
    indices of ``keypoint_names`` (D2's ``create_keypoint_hflip_indices`` gives the same list).
    """
    order = list(range(num_keypoints))
    seen = set()
    for pair in flip_map:
        if len(pair) != 2:
            raise ValueError(f"flip_map entries must be (i, j) pairs, got {pair!r}")
        i, j = (int(p) for p in pair)
        if not (0 <= i < num_keypoints and 0 <= j < num_keypoints):
            raise ValueError(f"flip_map pair {pair!r} out of range for {num_keypoints} keypoints")
        if i in seen or j in seen or i == j:
            raise ValueError(f"flip_map pair {pair!r} repeats a keypoint")
        seen.update((i, j))
        order[i], order[j] = j, i
    return order


def flip_heatmaps(
    heatmaps: torch.Tensor, flip_map: Sequence[Tuple[int, int]], shift: bool = True
) -> torch.Tensor:
    """Mirror (N, K, H, W) heatmaps along W and swap the symmetric keypoints' channels.

    ``shift=True`` then moves the maps one pixel toward +x (column 0 keeps its value), as
    mmpose's ``flip_heatmaps(shift_heatmap=True)``; see the module docstring for which flip each
    option inverts.
    """
    _check_heatmaps(heatmaps)
    flipped = heatmaps.flip(-1)[:, flip_indices(heatmaps.shape[1], flip_map)]
    if shift:
        flipped = torch.cat([flipped[..., :1], flipped[..., :-1]], dim=-1)
    return flipped


def flip_test_average(
    heatmaps: torch.Tensor,
    flipped_input_heatmaps: torch.Tensor,
    flip_map: Sequence[Tuple[int, int]],
    shift: bool = True,
) -> torch.Tensor:
    """Flip-test averaging: mean of the maps of an input and the flipped-back maps of its mirror."""
    _check_heatmaps(heatmaps)
    if heatmaps.shape != flipped_input_heatmaps.shape:
        raise ValueError(
            f"heatmaps {tuple(heatmaps.shape)} and flipped_input_heatmaps "
            f"{tuple(flipped_input_heatmaps.shape)} must have the same shape"
        )
    return 0.5 * (heatmaps + flip_heatmaps(flipped_input_heatmaps, flip_map, shift=shift))
