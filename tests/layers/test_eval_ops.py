"""d2ext.layers evaluation ops: compiled kernels and numpy references against independent answers.

Every test taking ``route`` runs twice: on the compiled op ("compiled", skipped without the
extension) and on its reference ("reference"), through the one Python face in
:mod:`d2ext.layers.eval_ops`. The expected values never come from the code under test: the
column-major run definition, libpng (OpenCV) on the same PNG scanlines, ``np.unique``.
"""

import struct
import zlib

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch

import d2ext.layers.eval_ops as eval_ops
from d2ext.layers import (
    eval_ops_compiled,
    extension_available,
    id_pair_counts,
    png_panoptic_ids,
    png_panoptic_ids_reference,
    rle_run_lengths,
)

OFFSET = 1 << 24


@pytest.fixture(params=["compiled", "reference"])
def route(request, monkeypatch):
    """Runs a test on the compiled ops, then on their references."""
    if request.param == "compiled" and not extension_available():
        pytest.skip("d2ext._C not built")
    if request.param == "reference":
        monkeypatch.setattr(eval_ops, "extension_available", lambda: False)
    assert eval_ops_compiled() == (request.param == "compiled")
    return request.param


# ----------------------------------------------------------------------------- rle_run_lengths
def _column_major_runs(mask: np.ndarray):
    """COCO's definition: lengths of the runs of ``mask.T.ravel()``, the first run being 0s."""
    flat = mask.T.ravel() != 0
    bounds = np.r_[0, np.flatnonzero(flat[1:] != flat[:-1]) + 1, flat.size]
    runs = np.diff(bounds).tolist()
    return [0] + runs if flat[0] else runs


def _split(counts, lengths):
    ends = np.cumsum(lengths.numpy()).tolist()
    return [counts[a:b].tolist() for a, b in zip([0] + ends[:-1], ends)]


@pytest.mark.parametrize("seed", range(3))
def test_rle_run_lengths_are_column_major_runs(route, seed):
    rng = np.random.default_rng(seed)
    for _ in range(40):
        n, h, w = int(rng.integers(0, 5)), int(rng.integers(1, 40)), int(rng.integers(1, 40))
        p = rng.random()
        masks = rng.random((n, h, w)) < p
        if rng.random() < 0.3:  # long vertical runs crossing column breaks
            masks[:] = rng.random((n, 1, w)) < p
        as_uint8 = masks.astype(np.uint8) * rng.integers(1, 256, size=masks.shape).astype(np.uint8)
        expect = [_column_major_runs(m) for m in masks]
        for t in (torch.from_numpy(masks), torch.from_numpy(as_uint8)):  # uint8: nonzero = 1
            counts, lengths = rle_run_lengths(t)
            assert counts.dtype == lengths.dtype == torch.int64 and lengths.shape == (n,)
            assert _split(counts, lengths) == expect, (n, h, w)
    # the definition is COCO's: pycocotools compresses it into its own encoding
    m = rng.random((1, 9, 13)) < 0.4
    rle = mask_util.frPyObjects([{"size": [9, 13], "counts": _column_major_runs(m[0])}], 9, 13)
    assert rle == mask_util.encode(np.asfortranarray(m.transpose(1, 2, 0).astype(np.uint8)))


def test_rle_run_lengths_views_and_bad_inputs(route):
    counts, lengths = rle_run_lengths(torch.tensor([[[0, 1], [1, 1]]], dtype=torch.uint8))
    assert counts.tolist() == [1, 3] and lengths.tolist() == [2]  # column-major 0,1,1,1
    masks = torch.rand(3, 17, 29, generator=torch.Generator().manual_seed(0)) < 0.3
    view = masks.permute(0, 2, 1)[:, ::2]  # non-contiguous
    assert _split(*rle_run_lengths(view)) == [_column_major_runs(m) for m in view.numpy()]
    with pytest.raises(ValueError, match="rle_run_lengths: masks must be bool or uint8"):
        rle_run_lengths(torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match=r"rle_run_lengths: masks must be \(N, H, W\)"):
        rle_run_lengths(torch.zeros(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="rle_run_lengths: masks must have a non-empty image size"):
        rle_run_lengths(torch.zeros(1, 0, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="rle_run_lengths: masks must be a torch.Tensor"):
        rle_run_lengths(np.zeros((1, 2, 2), bool))


# ----------------------------------------------------------------------------- png_panoptic_ids
def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _libpng_ids(raw: bytes, height: int, width: int, channels: int) -> np.ndarray:
    """The ids libpng (through OpenCV) decodes from these scanlines wrapped into a PNG file."""
    header = struct.pack(">IIBBBBB", width, height, 8, {3: 2, 4: 6}[channels], 0, 0, 0)
    png = (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw))
        + _chunk(b"IEND", b"")
    )
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED).astype(np.int64)
    return img[:, :, 2] + 256 * img[:, :, 1] + 65536 * img[:, :, 0]  # OpenCV gives BGR(A)


def _scanlines(rng, height, width, channels, filters):
    """Filtered scanlines: a filter byte from ``filters`` per row, then flat runs of differences
    (zeros, as PNG encoders produce on flat regions) mixed with random bytes."""
    rows = []
    for y in range(height):
        body = rng.integers(0, 256, size=width * channels, dtype=np.uint8)
        body[rng.random(width * channels) < 0.6] = 0
        if y % 5 == 3:
            body[:] = 0  # a whole row without differences
        rows.append(bytes([filters[y % len(filters)]]) + body.tobytes())
    return b"".join(rows)


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("filters", [[0], [1], [2], [3], [4], [0, 1, 2, 3, 4], [4, 3, 4, 2, 1, 0]])
def test_png_panoptic_ids_are_libpng_ids(route, channels, filters):
    rng = np.random.default_rng(len(filters) * 10 + filters[0] + channels)
    for height, width in ((23, 31), (1, 5), (6, 1)):
        raw = _scanlines(rng, height, width, channels, filters)
        ids = png_panoptic_ids(
            torch.frombuffer(bytearray(raw), dtype=torch.uint8), height, width, channels
        )
        assert ids.dtype == torch.int32 and ids.shape == (height, width)
        assert np.array_equal(ids.numpy(), _libpng_ids(raw, height, width, channels))
    empty = png_panoptic_ids(torch.zeros(0, dtype=torch.uint8), 0, 7, channels)
    assert empty.shape == (0, 7)


@pytest.mark.skipif(not extension_available(), reason="d2ext._C not built")
def test_png_panoptic_ids_compiled_equals_reference_at_image_size():
    rng = np.random.default_rng(11)
    raw = _scanlines(rng, 96, 160, 3, [0, 1, 2, 3, 4, 4, 2])
    buf = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    assert torch.equal(
        png_panoptic_ids(buf, 96, 160, 3), png_panoptic_ids_reference(buf, 96, 160, 3)
    )


def test_png_panoptic_ids_bad_inputs(route):
    rows = bytes([0]) + bytes(6) + bytes([7]) + bytes(6)  # second scanline: filter type 7
    with pytest.raises(ValueError, match=r"corrupt PNG: scanline filter type 7 \(valid: 0-4\)"):
        png_panoptic_ids(torch.frombuffer(bytearray(rows), dtype=torch.uint8), 2, 2, 3)
    with pytest.raises(ValueError, match="corrupt PNG: the image data has 13 bytes.*needs 14"):
        png_panoptic_ids(torch.zeros(13, dtype=torch.uint8), 2, 2, 3)
    with pytest.raises(ValueError, match=r"png_panoptic_ids: channels must be 3 \(RGB\) or 4"):
        png_panoptic_ids(torch.zeros(10, dtype=torch.uint8), 2, 2, 2)
    with pytest.raises(ValueError, match="png_panoptic_ids: raw must be a 1-D uint8 tensor"):
        png_panoptic_ids(torch.zeros(2, 7, dtype=torch.uint8), 2, 2, 3)
    with pytest.raises(ValueError, match="png_panoptic_ids: height and width must be >= 0"):
        png_panoptic_ids(torch.zeros(0, dtype=torch.uint8), -1, 2, 3)


# ----------------------------------------------------------------------------- id_pair_counts
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_id_pair_counts_is_np_unique(route, dtype):
    rng = np.random.default_rng(3)
    gt = torch.from_numpy(rng.integers(0, OFFSET, size=7)[rng.integers(0, 7, size=(40, 50))]).to(
        dtype
    )
    pred = torch.from_numpy(rng.integers(0, OFFSET, size=5)[rng.integers(0, 5, size=(40, 50))]).to(
        dtype
    )
    pred[:, 10:30] = 0  # long runs
    gt[0, 0], pred[0, 1] = OFFSET - 1, OFFSET - 1  # the largest id
    keys, counts = id_pair_counts(gt, pred)
    ref_keys, ref_counts = np.unique(
        gt.numpy().astype(np.int64) * OFFSET + pred.numpy(), return_counts=True
    )
    assert keys.dtype == counts.dtype == torch.int64
    assert np.array_equal(keys.numpy(), ref_keys) and np.array_equal(counts.numpy(), ref_counts)
    keys, counts = id_pair_counts(gt.t(), pred.t())  # non-contiguous views
    assert np.array_equal(keys.numpy(), ref_keys) and np.array_equal(counts.numpy(), ref_counts)
    empty = torch.zeros(0, 3, dtype=dtype)
    assert id_pair_counts(empty, empty)[0].numel() == 0
    with pytest.raises(ValueError, match=r"segment ids must be in \[0, 2\^24\)"):
        id_pair_counts(gt, torch.full_like(pred, OFFSET))
    with pytest.raises(ValueError, match=r"segment ids must be in \[0, 2\^24\)"):
        id_pair_counts(torch.full_like(gt, -1), pred)
    with pytest.raises(ValueError, match="id_pair_counts: gt and pred must have one shape"):
        id_pair_counts(gt, pred[:3])
    with pytest.raises(
        ValueError, match="id_pair_counts: gt and pred must both be int32 or both int64"
    ):
        id_pair_counts(gt.float(), pred.float())
    with pytest.raises(
        ValueError, match="id_pair_counts: gt and pred must both be int32 or both int64"
    ):
        id_pair_counts(gt.int(), pred.long())


# ----------------------------------------------------------------------------- the ops' own checks
# The Python face checks inputs before it calls an op; these cases call ``torch.ops.d2ext.*``
# directly, so each C++ check is tested too (a TORCH_CHECK raises RuntimeError, a
# TORCH_CHECK_VALUE ValueError). A "meta" tensor stands in for one that is not on the CPU.
def _ids(dtype=torch.int32, fill=0, device="cpu"):
    return torch.full((3, 4), fill, dtype=dtype, device=device)


def _bytes(data: bytes):
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


_FILTER_7 = bytes([0]) + bytes(6) + bytes([7]) + bytes(6)  # 2x2 RGB, second scanline: filter 7
COMPILED_OP_BAD_INPUTS = [
    ("rle_run_lengths", lambda: (torch.zeros(1, 2, 2, dtype=torch.bool, device="meta"),),
     RuntimeError, "masks must be a CPU tensor"),
    ("rle_run_lengths", lambda: (torch.zeros(2, 2, dtype=torch.bool),),
     ValueError, r"masks must be \(N, H, W\), got \[2, 2\]"),
    ("rle_run_lengths", lambda: (torch.zeros(1, 2, 2),),
     ValueError, "masks must be bool or uint8, got Float"),
    ("rle_run_lengths", lambda: (torch.zeros(1, 0, 2, dtype=torch.bool),),
     ValueError, "masks must have a non-empty image size, got 0x2"),
    ("png_panoptic_ids", lambda: (torch.zeros(14, dtype=torch.uint8, device="meta"), 2, 2, 3),
     RuntimeError, "raw must be a 1-D uint8 CPU tensor"),
    ("png_panoptic_ids", lambda: (torch.zeros(14, dtype=torch.int32), 2, 2, 3),
     RuntimeError, "raw must be a 1-D uint8 CPU tensor, got Int"),
    ("png_panoptic_ids", lambda: (torch.zeros(2, 7, dtype=torch.uint8), 2, 2, 3),
     RuntimeError, r"raw must be a 1-D uint8 CPU tensor, got Byte \[2, 7\]"),
    ("png_panoptic_ids", lambda: (torch.zeros(10, dtype=torch.uint8), 2, 2, 2),
     ValueError, r"channels must be 3 \(RGB\) or 4 \(RGBA\), got 2"),
    ("png_panoptic_ids", lambda: (torch.zeros(0, dtype=torch.uint8), -1, 2, 3),
     ValueError, "PNG size must be >= 0, got -1x2"),
    ("png_panoptic_ids", lambda: (torch.zeros(13, dtype=torch.uint8), 2, 2, 3),
     ValueError, "corrupt PNG: the image data has 13 bytes, a 2x2 image with 3 channels needs 14"),
    ("png_panoptic_ids", lambda: (_bytes(_FILTER_7), 2, 2, 3),
     ValueError, r"corrupt PNG: scanline filter type 7 \(valid: 0-4\)"),
    ("id_pair_counts", lambda: (_ids(device="meta"), _ids()),
     RuntimeError, "id maps must be CPU tensors"),
    ("id_pair_counts", lambda: (_ids(), _ids()[:2]),
     ValueError, r"id maps must have one shape, got \[3, 4\] and \[2, 4\]"),
    ("id_pair_counts", lambda: (_ids(torch.float32), _ids(torch.float32)),
     ValueError, "id maps must both be int32 or both int64, got Float and Float"),
    ("id_pair_counts", lambda: (_ids(), _ids(torch.int64)),
     ValueError, "id maps must both be int32 or both int64, got Int and Long"),
    ("id_pair_counts", lambda: (_ids(), _ids(fill=OFFSET)),
     ValueError, r"segment ids must be in \[0, 2\^24\), got gt 0 and pred 16777216 at pixel 0"),
    ("id_pair_counts", lambda: (_ids(torch.int64, fill=-1), _ids(torch.int64)),
     ValueError, r"segment ids must be in \[0, 2\^24\), got gt -1 and pred 0 at pixel 0"),
]  # fmt: skip


@pytest.mark.skipif(not extension_available(), reason="d2ext._C not built")
@pytest.mark.parametrize(
    "op,args,error,match",
    [pytest.param(*case, id=f"{case[0]}-{i}") for i, case in enumerate(COMPILED_OP_BAD_INPUTS)],
)
def test_compiled_op_rejects_bad_inputs(op, args, error, match):
    with pytest.raises(error, match=match):
        getattr(torch.ops.d2ext, op)(*args())
