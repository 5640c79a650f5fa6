"""WIDER FACE annotation files as D2 datasets, with the five RetinaFace landmarks.

Two formats, both with images at ``<image_root>/<event>/<file>.jpg`` (the official layout):

* RetinaFace's ``retinaface_gt_v1.1`` ``label.txt`` (:func:`load_wider_face_label`)::

      # 0--Parade/0_Parade_marchingband_1_849.jpg
      449 330 122 149 488.906 373.643 0.0 542.089 376.442 0.0 ... 538.357 431.491 0.0 0.82

  a ``#`` line per image, then one face per line: ``x y w h`` (20 numbers in ``train/``: then
  five ``lx ly flag`` landmarks and a last value kept as ``"blur"``; 4 numbers in ``val/``,
  which has no landmarks). As in the original, a face whose first landmark has a negative x
  (``-1``) has none (all ``v=0``), every other face has all five labelled (``v=2``, as written;
  the flag is not used). An image without face lines is a valid image without faces.
* The plain WIDER ``wider_face_{train,val}_bbx_gt.txt`` (:func:`load_wider_bbx_gt`)::

      0--Parade/0_Parade_marchingband_1_849.jpg
      1
      449 330 122 149 0 0 0 0 0 0

  a path line, a face-count line, then ``count`` lines ``x y w h blur expression
  illumination invalid occlusion pose`` (a count of 0 is followed by one line of zeros). Faces
  have no landmarks (all ``v=0``); the six attributes are kept per annotation.

Records are D2 dicts: ``file_name``, ``height``, ``width`` (image header, read when the dataset
is loaded), ``image_id`` (``"<event>/<file>"``) and ``annotations`` ``{"bbox": [x, y, w, h],
"bbox_mode": BoxMode.XYWH_ABS, "category_id": 0, "iscrowd": 0, "keypoints": [x, y, v] * 5}``,
coordinates as written in the file (pixels, top-left origin). Point order
:data:`WIDER_FACE_KEYPOINT_NAMES`: left eye, right eye, nose, left and right mouth corners, left
and right as the label file stores them (image left / right of a frontal face).

Bad input: a malformed line is a ValueError naming ``file:line``; a box with a negative width or
height (one such face is in the official val set) and a zero-area box are skipped, with one
warning per file naming the lines; an image that does not exist is a FileNotFoundError naming
it and the line that lists it.
"""

import logging
import math
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from .ibug_pts import _image_size

logger = logging.getLogger(__name__)

__all__ = [
    "WIDER_FACE_KEYPOINT_NAMES",
    "WIDER_FACE_FLIP_MAP",
    "WIDER_FACE_CONNECTION_RULES",
    "WIDER_BBX_ATTRIBUTES",
    "wider_face_metadata",
    "load_wider_face_label",
    "load_wider_bbx_gt",
    "format_label_face",
    "register_wider_face",
    "register_wider_bbx",
    "register_wider_face_builtins",
]

WIDER_FACE_KEYPOINT_NAMES: Tuple[str, ...] = (
    "left_eye",
    "right_eye",
    "nose",
    "left_mouth",
    "right_mouth",
)
WIDER_FACE_FLIP_MAP: Tuple[Tuple[str, str], ...] = (
    ("left_eye", "right_eye"),
    ("left_mouth", "right_mouth"),
)
# D2 Visualizer format (name_a, name_b, (r, g, b)): eye line, mouth line, nose to both
WIDER_FACE_CONNECTION_RULES: Tuple[Tuple[str, str, Tuple[int, int, int]], ...] = (
    ("left_eye", "right_eye", (0, 255, 0)),
    ("left_mouth", "right_mouth", (255, 0, 255)),
    ("left_eye", "nose", (0, 255, 255)),
    ("right_eye", "nose", (0, 255, 255)),
)
# the per-face attribute columns of the bbx_gt files, after x y w h
WIDER_BBX_ATTRIBUTES = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")
_NUM_POINTS = len(WIDER_FACE_KEYPOINT_NAMES)
_MAX_LISTED = 20  # line numbers named in one warning

# (image path as written, line of the path, annotations)
_Entry = Tuple[str, int, List[Dict]]


def wider_face_metadata(**extra) -> Dict:
    """D2 metadata of a WIDER-style face dataset (one class "face", the five landmarks and their
    flip map, ``evaluator_type="widerface"``), plus ``extra`` (``image_root``, ``wider_gt_dir``
    — the folder of the four official ``.mat`` files — ...)."""
    return {
        "thing_classes": ["face"],
        "keypoint_names": WIDER_FACE_KEYPOINT_NAMES,
        "keypoint_flip_map": WIDER_FACE_FLIP_MAP,
        "keypoint_connection_rules": WIDER_FACE_CONNECTION_RULES,
        "evaluator_type": "widerface",
        **extra,
    }


class _Skipped:
    """Line numbers of the faces skipped in one file, reported in one warning per reason."""

    def __init__(self, path: str):
        self.path = path
        self.lines: Dict[str, List[int]] = {"negative": [], "zero-area": []}

    def box_ok(self, w: float, h: float, lineno: int) -> bool:
        if w < 0 or h < 0:
            self.lines["negative"].append(lineno)
            return False
        if w == 0 or h == 0:
            self.lines["zero-area"].append(lineno)
            return False
        return True

    def report(self) -> None:
        for what, lines in (
            ("with a negative width or height", self.lines["negative"]),
            ("with zero area", self.lines["zero-area"]),
        ):
            if lines:
                listed = ", ".join(str(n) for n in lines[:_MAX_LISTED])
                more = f" and {len(lines) - _MAX_LISTED} more" if len(lines) > _MAX_LISTED else ""
                logger.warning(
                    f"{self.path}: skipped {len(lines)} face box(es) {what} (lines {listed}{more})"
                )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _numbers(text: str, where: str) -> List[float]:
    try:
        values = [float(v) for v in text.split()]
    except ValueError:
        raise ValueError(f"{where}: non-numeric value in face line {text!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{where}: non-finite value in face line {text!r}")
    return values


def _annotation(xywh: Sequence[float], landmarks: Optional[np.ndarray] = None, **extra) -> Dict:
    """One face; ``landmarks`` (5, 2) as written or None (none labelled).

    The original's rule decides whether a face has landmarks (biubug6 ``data/wider_face.py``):
    all five are missing when the FIRST point's x is negative (``-1``, or a left eye beyond the
    left border), else all five are labelled as written (a later ``-1 -1`` point included)."""
    keypoints = np.zeros((_NUM_POINTS, 3))
    if landmarks is not None and not landmarks[0, 0] < 0:
        keypoints[:, :2] = landmarks
        keypoints[:, 2] = 2
    return {
        "bbox": [float(v) for v in xywh],
        "bbox_mode": BoxMode.XYWH_ABS,
        "category_id": 0,
        "iscrowd": 0,
        "keypoints": [float(v) for v in keypoints.reshape(-1)],
        **extra,
    }


def _read_lines(path: str) -> List[str]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"WIDER FACE annotation file {path!r} does not exist")
    with open(path) as f:
        return f.read().splitlines()


def _parse_label(label_txt: str) -> List[_Entry]:
    """The images of a ``label.txt`` in file order (module doc)."""
    entries: List[_Entry] = []
    skipped = _Skipped(label_txt)
    for lineno, line in enumerate(_read_lines(label_txt), start=1):
        text = line.strip()
        where = f"{label_txt}:{lineno}"
        if not text:
            continue
        if text.startswith("#"):
            image = text[1:].strip()
            if not image:
                raise ValueError(f"{where}: '#' line without an image path")
            entries.append((image, lineno, []))
            continue
        if not entries:
            raise ValueError(f"{where}: face line before the first '# <image path>' line")
        values = _numbers(text, where)
        if len(values) not in (4, 19, 20):
            raise ValueError(
                f"{where}: expected 4 numbers (x y w h) or 20 (x y w h, 5 x 'lx ly flag', "
                f"blur), got {len(values)}: {text!r}"
            )
        if not skipped.box_ok(values[2], values[3], lineno):
            continue
        landmarks = None
        if len(values) >= 19:
            landmarks = np.asarray(values[4:19]).reshape(_NUM_POINTS, 3)[:, :2]
        extra = {"blur": values[19]} if len(values) == 20 else {}
        entries[-1][2].append(_annotation(values[:4], landmarks, **extra))
    skipped.report()
    return entries


def _parse_bbx_gt(bbx_gt_txt: str) -> List[_Entry]:
    """The images of a ``wider_face_*_bbx_gt.txt`` in file order (module doc)."""
    lines = _read_lines(bbx_gt_txt)
    entries: List[_Entry] = []
    skipped = _Skipped(bbx_gt_txt)
    i = 0

    def next_line(what: str) -> Tuple[str, int]:
        nonlocal i
        while i < len(lines) and not lines[i].strip():
            i += 1
        if i == len(lines):
            raise ValueError(f"{bbx_gt_txt}:{len(lines)}: file ends where {what} was expected")
        i += 1
        return lines[i - 1].strip(), i

    while True:
        while i < len(lines) and not lines[i].strip():
            i += 1
        if i == len(lines):
            break
        image, path_line = next_line("an image path")
        if all(_is_number(v) for v in image.split()):
            raise ValueError(
                f"{bbx_gt_txt}:{path_line}: expected an image path, got {image!r} (more face "
                "lines than the face count above?)"
            )
        count_text, count_line = next_line(f"the face count of {image}")
        if not count_text.isdigit():
            raise ValueError(
                f"{bbx_gt_txt}:{count_line}: expected the face count of {image} (listed on line "
                f"{path_line}), got {count_text!r}"
            )
        count = int(count_text)
        if count == 0:
            # an image without faces is followed by one line of zeros (absent in some copies)
            j = i
            while j < len(lines) and not lines[j].strip():
                j += 1
            if j < len(lines) and lines[j].split() == ["0"] * 10:
                i = j + 1
        annotations = []
        for _ in range(count):
            text, lineno = next_line(f"face {len(annotations) + 1} of {count} of {image}")
            where = f"{bbx_gt_txt}:{lineno}"
            values = _numbers(text, where)
            if len(values) != 4 + len(WIDER_BBX_ATTRIBUTES) or not all(
                v.is_integer() for v in values
            ):
                raise ValueError(
                    f"{where}: expected 10 integers (x y w h blur expression illumination "
                    f"invalid occlusion pose), got {text!r}"
                )
            if skipped.box_ok(values[2], values[3], lineno):
                attrs = dict(zip(WIDER_BBX_ATTRIBUTES, (int(v) for v in values[4:])))
                annotations.append(_annotation(values[:4], **attrs))
        entries.append((image, path_line, annotations))
    skipped.report()
    return entries


def _records(entries: List[_Entry], image_root: str, annotation_file: str) -> List[Dict]:
    """D2 dicts of the parsed ``entries``; image sizes come from the image headers."""
    if not os.path.isdir(image_root):
        raise FileNotFoundError(f"WIDER FACE image root {image_root!r} is not a directory")
    dicts, seen, rotated = [], {}, []
    for image, lineno, annotations in entries:
        where = f"{annotation_file}:{lineno}"
        key = os.path.splitext(image)[0].replace(os.sep, "/")
        if key in seen:
            raise ValueError(
                f"{where}: image {image!r} is listed again (first on line {seen[key]})"
            )
        seen[key] = lineno
        file_name = os.path.join(image_root, image)
        if not os.path.isfile(file_name):
            raise FileNotFoundError(f"{where}: image {file_name!r} does not exist")
        size = _image_size(file_name)
        if size is None:
            rotated.append(file_name)
            continue
        dicts.append(
            {
                "file_name": file_name,
                "height": size[0],
                "width": size[1],
                "image_id": key,
                "annotations": annotations,
            }
        )
    if rotated:
        logger.warning(
            f"{annotation_file}: skipped {len(rotated)} image(s) with an EXIF orientation (D2 "
            f"rotates them on read, their boxes would not match): {rotated[:_MAX_LISTED]}"
        )
    faces = sum(len(d["annotations"]) for d in dicts)
    logger.info(f"Loaded {len(dicts)} images with {faces} faces from {annotation_file}")
    return dicts


def load_wider_face_label(label_txt: str, image_root: str) -> List[Dict]:
    """D2 dicts of a RetinaFace ``label.txt`` (module doc), in file order."""
    return _records(_parse_label(label_txt), image_root, label_txt)


def load_wider_bbx_gt(bbx_gt_txt: str, image_root: str) -> List[Dict]:
    """D2 dicts of a WIDER ``wider_face_*_bbx_gt.txt`` (module doc), in file order."""
    return _records(_parse_bbx_gt(bbx_gt_txt), image_root, bbx_gt_txt)


def format_label_face(
    xywh: Sequence[float],
    landmarks: Optional[np.ndarray] = None,
    flags: Optional[Sequence[float]] = None,
    blur: Optional[float] = None,
) -> str:
    """One face line of a ``label.txt``: ``x y w h`` alone, or with five ``lx ly flag``
    (``landmarks`` (5, 2), None = all missing: ``-1`` everywhere, as RetinaFace writes them)
    and ``blur`` when given. Numbers are written with up to 4 decimals."""

    def num(v: float) -> str:
        v = float(v)
        return str(int(v)) if v.is_integer() else f"{v:.4f}".rstrip("0")

    fields = [num(v) for v in xywh]
    if landmarks is not None or blur is not None:
        if landmarks is None:
            fields += ["-1.0"] * (3 * _NUM_POINTS)
        else:
            flags = [0.0] * _NUM_POINTS if flags is None else flags
            for (x, y), flag in zip(np.asarray(landmarks).reshape(_NUM_POINTS, 2), flags):
                fields += [num(x), num(y), f"{float(flag):.1f}"]
        fields.append(num(-1.0 if blur is None else blur))
    return " ".join(fields)


def _require(path: Optional[str], what: str, is_dir: bool) -> None:
    if path is not None and not (os.path.isdir(path) if is_dir else os.path.isfile(path)):
        raise FileNotFoundError(f"{what} {path!r} does not exist")


def _register(name: str, load, annotation_file: str, image_root: str, gt_dir: Optional[str]):
    DatasetCatalog.register(name, load)
    extra = {"image_root": image_root, "annotation_file": annotation_file}
    if gt_dir is not None:
        extra["wider_gt_dir"] = gt_dir
    MetadataCatalog.get(name).set(**wider_face_metadata(**extra))


def register_wider_face(
    name: str, label_txt: str, image_root: str, gt_dir: Optional[str] = None
) -> None:
    """Register ``name``: a RetinaFace ``label.txt`` (:func:`load_wider_face_label`) with
    :func:`wider_face_metadata` (``wider_gt_dir=gt_dir``, the four official ``.mat`` files,
    when given). The files must exist; images are read when the dataset is loaded."""
    _require(label_txt, f"dataset {name!r} (widerface): label.txt", False)
    _require(image_root, f"dataset {name!r} (widerface): image root", True)
    _require(gt_dir, f"dataset {name!r} (widerface): .mat ground-truth folder", True)
    _register(
        name, lambda: load_wider_face_label(label_txt, image_root), label_txt, image_root, gt_dir
    )


def register_wider_bbx(
    name: str, bbx_gt_txt: str, image_root: str, gt_dir: Optional[str] = None
) -> None:
    """Register ``name``: a WIDER ``wider_face_*_bbx_gt.txt`` (:func:`load_wider_bbx_gt`), as
    :func:`register_wider_face`."""
    _require(bbx_gt_txt, f"dataset {name!r} (wider_bbx): bbx_gt.txt", False)
    _require(image_root, f"dataset {name!r} (wider_bbx): image root", True)
    _require(gt_dir, f"dataset {name!r} (wider_bbx): .mat ground-truth folder", True)
    _register(
        name, lambda: load_wider_bbx_gt(bbx_gt_txt, image_root), bbx_gt_txt, image_root, gt_dir
    )


# D2-style builtin names of the paper configs: WIDER FACE in the layout biubug6's README gives,
# under $DETECTRON2_DATASETS/widerface: {train,val}/label.txt (retinaface_gt_v1.1) and
# {train,val}/images/<event>/*.jpg, plus the official .mat files in ground_truth/.
_BUILTINS = {
    "widerface_train": ("train/label.txt", "train/images", None),
    "widerface_val": ("val/label.txt", "val/images", "ground_truth"),
}


def register_wider_face_builtins(root: Optional[str] = None) -> None:
    """Register ``widerface_train`` / ``widerface_val`` (:data:`_BUILTINS`) under ``root``
    (default ``$DETECTRON2_DATASETS`` or ``datasets``). Files are checked when a dataset is
    loaded, as D2's builtin COCO: a missing one is a FileNotFoundError naming it."""
    root = os.path.expanduser(root or os.environ.get("DETECTRON2_DATASETS", "datasets"))
    for name, (label, images, gt) in _BUILTINS.items():
        if name in DatasetCatalog.list():
            continue
        label_txt = os.path.join(root, "widerface", label)
        image_root = os.path.join(root, "widerface", images)
        gt_dir = os.path.join(root, "widerface", gt) if gt else None

        def load(name=name, label_txt=label_txt, image_root=image_root):
            what = f"builtin dataset {name!r} (WIDER FACE, see the README's RetinaFace section):"
            _require(label_txt, f"{what} label.txt", False)
            _require(image_root, f"{what} image folder", True)
            return load_wider_face_label(label_txt, image_root)

        _register(name, load, label_txt, image_root, gt_dir)
