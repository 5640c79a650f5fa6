"""read_panoptic_png: PNG files decoded through the compiled ``png_panoptic_ids`` against OpenCV
(the route without the extension). The op itself is tested in tests/layers/test_eval_ops.py."""

import glob
import os
import struct
import zlib

import cv2
import numpy as np
import pytest
from panopticapi.utils import id2rgb
from PIL import Image

import d2ext.evaluation.panoptic_png as png_module
from d2ext.evaluation.panoptic_png import read_panoptic_png
from d2ext.layers import extension_available

needs_ext = pytest.mark.skipif(not extension_available(), reason="d2ext._C not built")


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
    thirds = [
        data[: len(data) // 3],
        data[len(data) // 3 : 2 * len(data) // 3],
        data[2 * len(data) // 3 :],
    ]
    header = struct.pack(">IIBBBBB", w, h, depth, {3: 2, 4: 6}[c], 0, 0, interlace)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + b"".join(_chunk(b"IDAT", t) for t in thirds)
        + _chunk(b"IEND", b"")
    )


def _expected_ids(pixels):
    p = pixels.astype(np.int64)
    return p[..., 0] + 256 * p[..., 1] + 65536 * p[..., 2]


@pytest.fixture
def read_with_opencv(without_eval_ops):
    """read_panoptic_png as it runs without the compiled op (OpenCV decodes the file)."""

    def read(path):
        with without_eval_ops():
            return read_panoptic_png(path)

    return read


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
def test_every_png_filter_decodes_like_opencv(tmp_path, read_with_opencv, channels, filters):
    rng = np.random.default_rng(len(filters) * 10 + filters[0] + channels)
    pixels = _segment_like(rng, 37, 53, channels)
    path = str(tmp_path / "a.png")
    with open(path, "wb") as f:
        f.write(_encode_png(pixels, filters))
    fast = read_panoptic_png(path)
    assert fast.dtype == np.int32 and fast.shape == (37, 53)
    assert (fast == _expected_ids(pixels)).all()
    assert (read_with_opencv(path) == fast).all()


@needs_ext
@pytest.mark.parametrize("use_deflate", [True, False])
def test_encoder_written_pngs_match_opencv(tmp_path, monkeypatch, read_with_opencv, use_deflate):
    if not use_deflate:
        monkeypatch.setattr(png_module, "_deflate", None)  # stdlib zlib inflates the same bytes
    rng = np.random.default_rng(0)
    paths = []
    for i, mode in enumerate(("RGB", "RGBA")):
        pixels = _segment_like(rng, 64, 96, len(mode))
        Image.fromarray(pixels, mode).save(tmp_path / f"{mode}.png")  # PIL picks filters adaptively
        cv2.imwrite(str(tmp_path / f"cv2_{mode}.png"), np.ascontiguousarray(pixels[..., ::-1]))
        paths += [str(tmp_path / f"{mode}.png"), str(tmp_path / f"cv2_{mode}.png")]
    for path in paths:
        fast = read_panoptic_png(path)
        assert (fast == read_with_opencv(path)).all(), path


@needs_ext
@pytest.mark.parametrize("use_deflate", [True, False])
def test_real_coco_pngs_match_opencv(require_shared, monkeypatch, read_with_opencv, use_deflate):
    if not use_deflate:
        monkeypatch.setattr(png_module, "_deflate", None)
    folder = require_shared("real_samples", "coco_panoptic", "panoptic_examples")
    paths = sorted(glob.glob(os.path.join(folder, "*.png")))
    assert paths
    for path in paths:
        fast = read_panoptic_png(path)
        assert len(np.unique(fast)) > 5 and (fast == read_with_opencv(path)).all(), path


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
    raw = bytearray(
        zlib.decompress(zlib.compress(b"".join(bytes([0]) + bytes(24) for _ in range(8))))
    )
    raw[0] = 7
    header = struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0)
    cases["filter.png"] = (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(bytes(raw)))
        + _chunk(b"IEND", b""),
        "filter type 7",
    )
    short = zlib.compress(bytes(10))
    cases["short.png"] = (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", short)
        + _chunk(b"IEND", b""),
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


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "opencv"])
def test_read_panoptic_png(tmp_path, read_with_opencv, compiled):
    if compiled and not extension_available():
        pytest.skip("d2ext._C not built")
    read = read_panoptic_png if compiled else read_with_opencv
    ids = np.array([[0, 1, 256], [65536, 16777215, 123456]], dtype=np.int64)
    Image.fromarray(id2rgb(ids)).save(tmp_path / "a.png")
    got = read(str(tmp_path / "a.png"))
    assert got.dtype == np.int32 and got.shape == (2, 3) and (got == ids).all()
    Image.fromarray(np.zeros((2, 3), np.uint8)).save(tmp_path / "gray.png")
    with pytest.raises(ValueError, match="gray.png.*8-bit RGB"):
        read(str(tmp_path / "gray.png"))
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read(str(tmp_path / "missing.png"))
