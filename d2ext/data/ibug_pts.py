"""iBUG / 300-W ``.pts`` landmark files + images as D2 datasets.

A ``.pts`` file (one per image, same stem)::

    version: 1
    n_points:  68
    {
    x1 y1
    ...
    xN yN
    }

Coordinates are 1-based pixel coordinates (the centre of the top-left pixel is (1, 1)), so the
D2 continuous coordinate (pixel (i, j) covers ``[j, j+1) x [i, i+1)``) is ``pts - 0.5``.

The format has no visibility; every point is ``v=2`` unless a visibility json (``{image_id:
[v1, ..., vN]}``, v in {0, 1, 2} as COCO's) says otherwise. Each image gives one D2 record with
one "face" annotation whose ``bbox`` (XYXY_ABS) is the tight box of its labelled (v > 0) points.
"""

import json
import logging
import math
import os
from typing import Dict, List, Optional, Tuple

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from PIL import Image

from .keypoint_metadata import ibug68_metadata

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGE_EXTENSIONS",
    "read_pts",
    "load_ibug_pts_dataset",
    "landmark_annotation",
    "register_ibug_pts",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp")
_EXIF_ORIENTATION = 0x0112
_MAX_LISTED = 20  # skipped files named in one warning


def read_pts(path: str) -> np.ndarray:
    """The (N, 2) float64 ``x y`` points of a ``.pts`` file, as written (1-based pixels).

    Raises ValueError naming the file and the 1-based line for a missing or malformed header
    (``version:`` optional, ``n_points:`` required), a malformed brace block, a line that is not
    two finite numbers, or a point count different from ``n_points``.
    """
    with open(path) as f:
        lines = f.read().splitlines()

    def fail(lineno: int, msg: str):
        raise ValueError(f"{path}:{lineno}: {msg}")

    if not any(line.strip() for line in lines):
        fail(1, "empty file")
    header: Dict[str, Tuple[str, int]] = {}  # key -> (value, line)
    i = 0
    while i < len(lines) and lines[i].strip() != "{":
        text = lines[i].strip()
        if text:
            key, sep, value = text.partition(":")
            key = key.strip()
            if not sep or key not in ("version", "n_points") or key in header:
                fail(
                    i + 1, f"expected a 'version:' or 'n_points:' header line or '{{', got {text!r}"
                )
            header[key] = (value.strip(), i + 1)
        i += 1
    if i == len(lines):
        fail(len(lines), "no '{' opening the point block")
    if "n_points" not in header:
        fail(i + 1, "missing 'n_points:' header before '{'")
    value, lineno = header["n_points"]
    n_points = int(value) if value.isdigit() else -1
    if n_points < 0:
        fail(lineno, f"n_points must be a non-negative integer, got {value!r}")
    open_line = i + 1
    points = []
    for j in range(i + 1, len(lines)):
        text = lines[j].strip()
        if text == "}":
            close_line = j + 1
            break
        if not text:
            continue
        fields = text.split()
        if "{" in text or "}" in text or len(fields) != 2:
            fail(j + 1, f"expected 'x y' (two numbers) or '}}', got {text!r}")
        try:
            xy = [float(v) for v in fields]
        except ValueError:
            fail(j + 1, f"non-numeric point {text!r}")
        if not all(math.isfinite(v) for v in xy):
            fail(j + 1, f"non-finite point {text!r}")
        points.append(xy)
    else:
        fail(len(lines), f"no '}}' closing the point block opened on line {open_line}")
    for k in range(close_line, len(lines)):
        if lines[k].strip():
            fail(k + 1, f"unexpected text after the closing '}}': {lines[k].strip()!r}")
    if len(points) != n_points:
        fail(close_line, f"n_points is {n_points} but the block has {len(points)} points")
    return np.asarray(points, np.float64).reshape(-1, 2)


def _read_visibility(visibility_file: str, num_points: Optional[int]) -> Dict[str, List[int]]:
    with open(visibility_file) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{visibility_file}: not valid json ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{visibility_file}: expected an object {{image_id: [v, ...]}}")
    for key, vis in data.items():
        ok = isinstance(vis, list) and all(v in (0, 1, 2) and not isinstance(v, bool) for v in vis)
        if not ok or (num_points is not None and len(vis) != num_points):
            raise ValueError(
                f"{visibility_file}: entry {key!r} must be a list of {num_points or 'N'} "
                f"visibility flags in {{0, 1, 2}}"
            )
    return data


def _image_size(path: str) -> Optional[tuple]:
    """(height, width) from the image header, or None if D2 would rotate the image on read
    (EXIF orientation), which the ``.pts`` of the stored pixels would then not match."""
    with Image.open(path) as im:
        if im.getexif().get(_EXIF_ORIENTATION, 1) != 1:
            return None
        return im.height, im.width


def _listing(paths: List[str]) -> str:
    more = len(paths) - _MAX_LISTED
    return ", ".join(paths[:_MAX_LISTED]) + (f" and {more} more" if more > 0 else "")


def load_ibug_pts_dataset(
    image_root: str,
    pts_root: Optional[str] = None,
    num_points: Optional[int] = 68,
    visibility_file: Optional[str] = None,
) -> List[Dict]:
    """D2 dataset dicts of every image under ``image_root`` (recursively; extensions
    :data:`IMAGE_EXTENSIONS`, any case) with its ``.pts`` at the same relative path and stem
    under ``pts_root`` (default: beside the image, the 300-W layout).

    Records (sorted by path): ``file_name``, ``height``, ``width`` (from the image header),
    ``image_id`` (the relative path without extension, e.g. ``"helen/trainset/100032540_1"``),
    ``annotations``: one ``{"bbox": [x0, y0, x1, y1], "bbox_mode": BoxMode.XYXY_ABS,
    "category_id": 0, "iscrowd": 0, "keypoints": [x1, y1, v1, ...]}`` in D2 coordinates
    (``pts - 0.5``).

    Args:
        num_points: points every file must have (None: any, but the same in all files).
        visibility_file: optional json ``{image_id: [v1, ..., vN]}`` giving each image's
            visibility flags (0 not labelled, 1 occluded, 2 visible); every image needs one.

    Images without a ``.pts`` (and images with an EXIF rotation) are skipped with a warning
    naming them; ``.pts`` files without an image are reported in a warning. A ``.pts`` file
    that is malformed or has the wrong number of points is a ValueError naming it.
    """
    pts_root = image_root if pts_root is None else pts_root
    for what, d in (("image root", image_root), ("pts root", pts_root)):
        if not os.path.isdir(d):
            raise FileNotFoundError(f"iBUG .pts dataset: {what} {d!r} is not a directory")
    images: Dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(image_root):
        dirnames.sort()
        for fn in sorted(filenames):
            stem, ext = os.path.splitext(fn)
            if ext.lower() not in IMAGE_EXTENSIONS:
                continue
            path = os.path.join(dirpath, fn)
            key = os.path.relpath(os.path.join(dirpath, stem), image_root).replace(os.sep, "/")
            if key in images:
                raise ValueError(
                    f"iBUG .pts dataset: images {images[key]} and {path} share the stem of "
                    f"one .pts file"
                )
            images[key] = path
    visibility = None if visibility_file is None else _read_visibility(visibility_file, num_points)

    dicts, no_pts, rotated = [], [], []
    for key in sorted(images):
        pts_file = os.path.join(pts_root, *key.split("/")) + ".pts"
        if not os.path.isfile(pts_file):
            no_pts.append(images[key])
            continue
        points = read_pts(pts_file)
        if num_points is None:
            num_points = len(points)
        if len(points) != num_points:
            raise ValueError(f"{pts_file}: has {len(points)} points, expected {num_points}")
        size = _image_size(images[key])
        if size is None:
            rotated.append(images[key])
            continue
        if visibility is None:
            vis = np.full(num_points, 2.0)
        elif key not in visibility:
            raise ValueError(f"{visibility_file}: no visibility entry for image_id {key!r}")
        elif len(visibility[key]) != num_points:
            raise ValueError(
                f"{visibility_file}: entry {key!r} has {len(visibility[key])} flags, "
                f"{pts_file} has {num_points} points"
            )
        else:
            vis = np.asarray(visibility[key], np.float64)
        xy = points - 0.5
        dicts.append(
            {
                "file_name": images[key],
                "height": size[0],
                "width": size[1],
                "image_id": key,
                "annotations": [landmark_annotation(xy, vis)],
            }
        )
    if no_pts:
        logger.warning(f"Skipped {len(no_pts)} image(s) without a .pts file: {_listing(no_pts)}")
    if rotated:
        logger.warning(
            f"Skipped {len(rotated)} image(s) with an EXIF orientation (D2 rotates them on "
            f"read, their .pts points would not match): {_listing(rotated)}"
        )
    orphans = _orphan_pts(pts_root, set(images))
    if orphans:
        logger.warning(f"{len(orphans)} .pts file(s) without an image: {_listing(orphans)}")
    logger.info(f"Loaded {len(dicts)} images with {num_points}-point landmarks from {image_root}")
    return dicts


def landmark_annotation(xy: np.ndarray, vis: np.ndarray) -> Dict:
    """The annotation of one face: ``xy`` (K, 2) D2 coordinates, ``vis`` (K,) in {0, 1, 2}; the
    bbox is the tight XYXY box of the labelled points (all points if none is labelled)."""
    labelled = xy[vis > 0] if (vis > 0).any() else xy
    x0, y0 = labelled.min(0)
    x1, y1 = labelled.max(0)
    keypoints = np.concatenate([xy, vis[:, None]], axis=1).reshape(-1)
    return {
        "bbox": [float(x0), float(y0), float(x1), float(y1)],
        "bbox_mode": BoxMode.XYXY_ABS,
        "category_id": 0,
        "iscrowd": 0,
        "keypoints": [float(v) for v in keypoints],
    }


def _orphan_pts(pts_root: str, image_keys) -> List[str]:
    orphans = []
    for dirpath, dirnames, filenames in os.walk(pts_root):
        dirnames.sort()
        for fn in sorted(filenames):
            stem, ext = os.path.splitext(fn)
            key = os.path.relpath(os.path.join(dirpath, stem), pts_root).replace(os.sep, "/")
            if ext.lower() == ".pts" and key not in image_keys:
                orphans.append(os.path.join(dirpath, fn))
    return orphans


def register_ibug_pts(
    name: str,
    image_root: str,
    pts_root: Optional[str] = None,
    visibility_file: Optional[str] = None,
) -> None:
    """Register ``name`` in D2's catalogs: :func:`load_ibug_pts_dataset` as loader, metadata
    :func:`ibug68_metadata` (``evaluator_type="landmark"``) plus ``image_root``/``pts_root``."""
    DatasetCatalog.register(
        name, lambda: load_ibug_pts_dataset(image_root, pts_root, 68, visibility_file)
    )
    MetadataCatalog.get(name).set(
        **ibug68_metadata(),
        image_root=image_root,
        pts_root=image_root if pts_root is None else pts_root,
    )
