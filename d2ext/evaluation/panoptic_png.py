"""Reading COCO panoptic PNGs into segment-id maps (panopticapi's ``rgb2id(imread(path))``).

An 8-bit RGB/RGBA PNG is parsed here (chunks, CRCs, inflate) and its scanlines are unfiltered
and turned into ids by :func:`d2ext.layers.png_panoptic_ids` in one pass, with no intermediate
image. Without the compiled op, and for every other kind of PNG, OpenCV decodes the file. Both
routes give the same ids; corrupt files raise a ``ValueError`` naming the file.
"""

import struct
import zlib
from typing import Optional

import cv2
import numpy as np
import torch

from d2ext.layers import eval_ops_compiled, png_panoptic_ids

try:  # libdeflate (PyPI "deflate"): optional, zlib gives the same bytes
    import deflate as _deflate
except ImportError:  # pragma: no cover - depends on the environment
    _deflate = None

__all__ = ["read_panoptic_png"]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _inflate(data: bytes, size: int) -> bytes:
    """zlib-decompress ``data`` (``size`` bytes expected): libdeflate when its binding (PyPI
    ``deflate``) is installed, ~20x faster than zlib on panoptic PNGs; else the stdlib zlib."""
    if _deflate is not None:
        return _deflate.zlib_decompress(data, size)
    return zlib.decompress(data)


def _png_ids_fast(path: str, data: bytes) -> Optional[np.ndarray]:
    """Ids of a non-interlaced 8-bit RGB/RGBA PNG through the compiled ``png_panoptic_ids``
    (inflate + unfilter + rgb2id, no intermediate image); None for any other PNG or when the op
    is not compiled (its reference unfilters byte by byte, OpenCV is faster). Chunk CRCs are
    checked, as libpng does."""
    if not eval_ops_compiled() or not data.startswith(_PNG_SIGNATURE):
        return None
    pos, end = len(_PNG_SIGNATURE), len(data)
    header, idat = None, []
    while pos + 12 <= end:
        (length,) = struct.unpack_from(">I", data, pos)
        kind = data[pos + 4 : pos + 8]
        if pos + 12 + length > end:
            raise ValueError(
                f"{path}: truncated PNG ({kind!r} chunk runs past the end of the file)"
            )
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack_from(">I", data, pos + 8 + length)
        if zlib.crc32(kind + body) != crc:
            raise ValueError(f"{path}: corrupt PNG (CRC error in the {kind!r} chunk)")
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None or not idat:
        raise ValueError(f"{path}: corrupt PNG (no IHDR or no IDAT chunk)")
    width, height, depth, color, compression, filter_method, interlace = header
    channels = {2: 3, 6: 4}.get(color)
    if depth != 8 or channels is None or compression or filter_method or interlace:
        return None  # OpenCV's decoder handles (or names) every other kind
    size = height * (1 + width * channels)
    try:
        raw = _inflate(b"".join(idat), size)
    except Exception as e:  # deflate.DeflateError / zlib.error
        raise ValueError(f"{path}: corrupt PNG (the image data does not inflate: {e})") from None
    if len(raw) != size:
        raise ValueError(f"{path}: corrupt PNG ({len(raw)} bytes of image data, {size} expected)")
    buf = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    try:
        return png_panoptic_ids(buf, height, width, channels).numpy()
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def read_panoptic_png(path: str) -> np.ndarray:
    """(H, W) int32 segment ids ``R + 256 G + 256**2 B`` of a COCO panoptic PNG (= rgb2id).

    8-bit RGB/RGBA PNGs are decoded by d2ext's compiled op (libdeflate inflate when installed,
    ~10x faster than libpng here), others and every PNG without the extension by OpenCV; both
    give the same ids.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise FileNotFoundError(f"cannot read the panoptic PNG {path}: {e}") from None
    ids = _png_ids_fast(path, data)
    if ids is not None:
        return ids
    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f"cannot decode the panoptic PNG {path}")
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ValueError(
            f"{path}: a panoptic PNG must be 8-bit RGB (ids as colours), got {img.dtype} {img.shape}"
        )
    # RGBA bytes read as little-endian int32 are R + 256 G + 256**2 B + 256**3 A
    rgba = cv2.cvtColor(img, cv2.COLOR_BGR2RGBA if img.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)
    ids = rgba.view("<i4")[:, :, 0]
    ids &= 0xFFFFFF
    return ids
