"""The compiled panoptic PNG decoder and pair counter against OpenCV / numpy (the fallback)."""

import glob
import os
import struct
import zlib

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import d2ext.evaluation.panoptic_quality as pqm
from d2ext.evaluation.panoptic_quality import OFFSET, panoptic_image_stats, read_panoptic_png
from d2ext.layers._ext import extension_available

needs_ext = pytest.mark.skipif(not extension_available(), reason="d2ext._C not built")
REAL = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "real_samples", "coco_panoptic")


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _filter_row(kind, cur, prev, bpp):
    """PNG encoder side of filter ``kind`` for one scanline (ints, so no wrap-around yet)."""
    cur, prev = cur.astype(np.int32), prev.astype(np.int32)
    left = np.concatenate([np.zeros(bpp, np.int32), cur[:-bpp]])
    up_left = np.concatenate([np.zeros(bpp, np.int32), prev[:-bpp]])
    if kind == 0:
        pred = np.zeros_like(cur)
    elif kind == 1:
        pred = left
    elif kind == 2:
        pred = prev
    elif kind == 3:
        pred = (left + prev) // 2
    else:
        p = left + prev - up_left
        pa, pb, pc = np.abs(p - left), np.abs(p - prev), np.abs(p - up_left)
        pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, up_left))
    return ((cur - pred) % 256).astype(np.uint8)


def _encode_png(pixels: np.ndarray, filters, depth=8, interlace=0) -> bytes:
    """An 8-bit RGB/RGBA PNG with the given filter type per row (cycled), IDAT split in 3."""
    h, w, c = pixels.shape
    flat = pixels.reshape(h, w * c)
    rows, prev = [], np.zeros(w * c, np.uint8)
    for y in range(h):
        kind = filters[y % len(filters)]
        rows.append(bytes([kind]) + _filter_row(kind, flat[y], prev, c).tobytes())
        prev = flat[y]
    data = zlib.compress(b"".join(rows), 6)
    thirds = [data[: len(data) // 3], data[len(data) // 3 : 2 * len(data) // 3], data[2 * len(data) // 3 :]]
    header = struct.pack(">IIBBBBB", w, h, depth, {3: 2, 4: 6}[c], 0, 0, interlace)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + b"".join(_chunk(b"IDAT", t) for t in thirds)
        + _chunk(b"IEND", b"")
    )


def _expected_ids(pixels):
    p = pixels.astype(np.int64)
    return p[..., 0] + 256 * p[..., 1] + 65536 * p[..., 2]


def _fallback(path, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(pqm, "extension_available", lambda: False)
        return read_panoptic_png(path)


def _segment_like(rng, h, w, c):
    """Piecewise-constant colours (as panoptic PNGs) plus some noise rows."""
    labels = rng.integers(0, 6, size=(h // 4 + 1, w // 4 + 1)).repeat(4, 0).repeat(4, 1)[:h, :w]
    colours = rng.integers(0, 256, size=(6, c), dtype=np.uint8)
    pixels = colours[labels]
    pixels[rng.integers(0, h, size=3)] = rng.integers(0, 256, size=(3, w, c), dtype=np.uint8)
    return pixels


@needs_ext
@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("filters", [[0], [1], [2], [3], [4], [0, 1, 2, 3, 4]])
def test_every_png_filter_decodes_like_opencv(tmp_path, monkeypatch, channels, filters):
    rng = np.random.default_rng(len(filters) * 10 + filters[0] + channels)
    pixels = _segment_like(rng, 37, 53, channels)
    path = str(tmp_path / "a.png")
    with open(path, "wb") as f:
        f.write(_encode_png(pixels, filters))
    fast = read_panoptic_png(path)
    assert fast.dtype == np.int32 and fast.shape == (37, 53)
    assert (fast == _expected_ids(pixels)).all()
    assert (_fallback(path, monkeypatch) == fast).all()


@needs_ext
@pytest.mark.parametrize("use_deflate", [True, False])
def test_encoder_written_pngs_match_opencv(tmp_path, monkeypatch, use_deflate):
    if not use_deflate:
        monkeypatch.setattr(pqm, "_deflate", None)  # stdlib zlib inflates the same bytes
    rng = np.random.default_rng(0)
    paths = sorted(glob.glob(os.path.join(REAL, "panoptic_examples", "*.png")))
    for i, mode in enumerate(("RGB", "RGBA")):
        pixels = _segment_like(rng, 64, 96, len(mode))
        Image.fromarray(pixels, mode).save(tmp_path / f"{mode}.png")  # PIL picks filters adaptively
        cv2.imwrite(str(tmp_path / f"cv2_{mode}.png"), np.ascontiguousarray(pixels[..., ::-1]))
        paths += [str(tmp_path / f"{mode}.png"), str(tmp_path / f"cv2_{mode}.png")]
    for path in paths:
        fast = read_panoptic_png(path)
        assert (fast == _fallback(path, monkeypatch)).all(), path


@needs_ext
def test_corrupt_and_unsupported_pngs(tmp_path):
    pixels = _segment_like(np.random.default_rng(1), 8, 8, 3)
    good = _encode_png(pixels, [4])
    bad_crc = bytearray(good)
    bad_crc[40] ^= 0xFF  # inside the first IDAT chunk
    cases = {
        "crc.png": (bytes(bad_crc), "CRC error"),
        "truncated.png": (good[:-30], "truncated|no IHDR or no IDAT"),
    }
    # a scanline filter type of 7 (valid: 0-4)
    raw = bytearray(zlib.decompress(zlib.compress(b"".join(bytes([0]) + bytes(24) for _ in range(8)))))
    raw[0] = 7
    header = struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0)
    cases["filter.png"] = (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(bytes(raw)))
        + _chunk(b"IEND", b""),
        "filter type 7",
    )
    short = zlib.compress(bytes(10))
    cases["short.png"] = (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", short) + _chunk(b"IEND", b""),
        "corrupt PNG",
    )
    for name, (data, match) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match=f"{name}.*({match})"):
            read_panoptic_png(str(tmp_path / name))
    # 16-bit and grayscale PNGs go to OpenCV, which names what a panoptic PNG must be
    cv2.imwrite(str(tmp_path / "deep.png"), np.zeros((4, 4, 3), np.uint16))
    with pytest.raises(ValueError, match="deep.png.*8-bit RGB"):
        read_panoptic_png(str(tmp_path / "deep.png"))
    (tmp_path / "junk.png").write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match="cannot decode.*junk.png"):
        read_panoptic_png(str(tmp_path / "junk.png"))


@needs_ext
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_id_pair_counts_is_np_unique(dtype):
    rng = np.random.default_rng(3)
    gt = torch.from_numpy(rng.integers(0, OFFSET, size=7)[rng.integers(0, 7, size=(40, 50))]).to(dtype)
    pred = torch.from_numpy(rng.integers(0, OFFSET, size=5)[rng.integers(0, 5, size=(40, 50))]).to(dtype)
    pred[:, 10:30] = 0  # long runs
    keys, counts = torch.ops.d2ext.id_pair_counts(gt, pred)
    ref_keys, ref_counts = np.unique(gt.numpy().astype(np.int64) * OFFSET + pred.numpy(), return_counts=True)
    assert (keys.numpy() == ref_keys).all() and (counts.numpy() == ref_counts).all()
    empty = torch.zeros(0, 3, dtype=dtype)
    assert torch.ops.d2ext.id_pair_counts(empty, empty)[0].numel() == 0
    with pytest.raises(ValueError, match=r"\[0, 2\^24\)"):
        torch.ops.d2ext.id_pair_counts(gt, torch.full_like(pred, OFFSET))
    with pytest.raises(ValueError, match="one shape"):
        torch.ops.d2ext.id_pair_counts(gt, pred[:3])
    with pytest.raises(ValueError, match="int32 or both int64"):
        torch.ops.d2ext.id_pair_counts(gt.float(), pred.float())


@needs_ext
def test_image_stats_same_with_and_without_the_extension(monkeypatch):
    rng = np.random.default_rng(5)
    gt = rng.integers(1, 6, size=(6, 8)).repeat(10, 0).repeat(5, 1)
    gt[:4] = 0
    gt[5:9, :10] = 77  # an id not in segments_info: ignored
    pred = np.roll(gt, 1, axis=1).astype(np.int32)
    pred[pred == 77] = 2
    pred[10:12] = 9
    cats = {c: {"id": c, "isthing": int(c < 4)} for c in range(1, 6)}
    gt_segs = [{"id": i, "category_id": i, "area": int((gt == i).sum()), "iscrowd": int(i == 5)} for i in range(1, 6)]
    pred_segs = [{"id": i, "category_id": i} for i in range(1, 6)] + [{"id": 9, "category_id": 3}]
    fast = panoptic_image_stats(gt, gt_segs, pred, pred_segs, cats, 1)
    with monkeypatch.context() as m:
        m.setattr(pqm, "extension_available", lambda: False)
        ref = panoptic_image_stats(gt, gt_segs, pred, pred_segs, cats, 1)
    for a, b in zip(fast, ref):
        assert np.array_equal(a, b)
    assert fast.tp.sum() > 0 and fast.fp.sum() > 0
    # the errors are the same on both paths
    for path_ext in (True, False):
        with monkeypatch.context() as m:
            m.setattr(pqm, "extension_available", lambda: path_ext)
            with pytest.raises(KeyError, match=r"image_id=3.*\[5, 9\].*in the PNG but not in segments_info"):
                panoptic_image_stats(gt, gt_segs, pred, pred_segs[:4], cats, 3)
            with pytest.raises(ValueError, match=r"image_id=3.*outside"):
                panoptic_image_stats(gt, gt_segs, pred - 1, pred_segs, cats, 3)
