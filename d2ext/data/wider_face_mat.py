"""WIDER FACE ground-truth ``.mat`` files (the official evaluation's ``gt_dir``), read and written.

The official evaluation reads four MATLAB files from one folder:

* ``wider_face_val.mat``: ``event_list`` (E, 1) cell of event names (``"0--Parade"``, also the
  image folder name), ``file_list`` (E, 1) cell of (n_e, 1) cells of image names without
  extension, ``face_bbx_list`` (E, 1) cell of (n_e, 1) cells of (F, 4) ``x y w h`` boxes
  (int32, top-left corner, width, height), and per-face attribute cells ``<attr>_label_list``
  of (F, 1) arrays with the same nesting.
* ``wider_{easy,medium,hard}_val.mat``: the same lists again, plus ``gt_list``: (E, 1) cell of
  (n_e, 1) cells of (K, 1) **1-based** row indices into the image's boxes: the subset's
  keep-list. A face outside it is neither a positive nor a false positive for that subset.

Here one image is one dict (the RetinaFace data contract)::

    {"event": str, "file": str (no extension), "boxes": float64 (N, 4) x y w h,
     "keep": {"easy": int64 (K,), "medium": ..., "hard": ...}  (0-based face indices)}

plus, when the files carry them, the attributes ``"blur"``, ``"expression"``,
``"illumination"``, ``"invalid"``, ``"occlusion"``, ``"pose"``: int64 (N,) arrays.
"""

import io
import os
from collections import OrderedDict
from typing import Dict, List, Sequence

import numpy as np
from scipy.io import loadmat, savemat

__all__ = [
    "ATTRIBUTES",
    "GT_FILE",
    "SUBSETS",
    "SUBSET_FILES",
    "read_wider_gt_mats",
    "write_wider_gt_mats",
]

SUBSETS = ("easy", "medium", "hard")
GT_FILE = "wider_face_val.mat"
SUBSET_FILES = OrderedDict((s, f"wider_{s}_val.mat") for s in SUBSETS)
# per-face attribute names; the files store each as "<name>_label_list"
ATTRIBUTES = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")


def _cell(items: Sequence) -> np.ndarray:
    """A MATLAB (n, 1) cell array: an object array savemat writes as a cell, loadmat reads back
    with the same (n, 1) shape."""
    out = np.empty((len(items), 1), dtype=object)
    for i, item in enumerate(items):
        out[i, 0] = item
    return out


def _index_dtype(n: int):
    # the official files store keep-lists in the smallest unsigned type holding the face count
    for dtype in (np.uint8, np.uint16, np.uint32):
        if n <= np.iinfo(dtype).max:
            return dtype
    return np.uint64


def _check_images(images: List[dict]) -> List[str]:
    """Validates the dicts to write; returns the attributes present in every image."""
    if not images:
        raise ValueError("write_wider_gt_mats: no images to write")
    seen = set()
    for i, img in enumerate(images):
        for key in ("event", "file", "boxes", "keep"):
            if key not in img:
                raise ValueError(f"write_wider_gt_mats: image {i} has no {key!r}")
        where = f"image {i} ({img['event']}/{img['file']})"
        if (img["event"], img["file"]) in seen:
            raise ValueError(f"write_wider_gt_mats: {where} appears twice")
        seen.add((img["event"], img["file"]))
        boxes = np.asarray(img["boxes"], dtype=np.float64)
        if boxes.size and (boxes.ndim != 2 or boxes.shape[1] != 4):
            raise ValueError(
                f"write_wider_gt_mats: {where}: boxes must be (N, 4), got {boxes.shape}"
            )
        if not np.isfinite(boxes).all():
            raise ValueError(f"write_wider_gt_mats: {where}: non-finite box coordinates")
        n = len(boxes.reshape(-1, 4))
        for subset in SUBSETS:
            if subset not in img["keep"]:
                raise ValueError(f"write_wider_gt_mats: {where}: keep has no {subset!r} list")
            keep = np.asarray(img["keep"][subset]).reshape(-1)
            if keep.size and (keep.min() < 0 or keep.max() >= n):
                raise ValueError(
                    f"write_wider_gt_mats: {where}: {subset} keep indices must be in [0, {n}), "
                    f"got {keep.tolist()}"
                )
        for attr in ATTRIBUTES:
            values = np.asarray(img.get(attr, np.zeros(n)))
            if values.size != n:
                raise ValueError(
                    f"write_wider_gt_mats: {where}: {attr!r} has {values.size} values for {n} faces"
                )
            if values.size and not (values.min() >= 0 and values.max() <= 255):
                # the official files store the attribute labels as uint8
                raise ValueError(f"write_wider_gt_mats: {where}: {attr!r} must be in [0, 255]")
    return [a for a in ATTRIBUTES if all(a in img for img in images)]


# the 116-byte text header savemat writes holds its creation time; a fixed one makes the
# files a function of their content (the synthetic datasets are byte-identical per seed)
_MAT_HEADER = b"MATLAB 5.0 MAT-file, written by d2ext.data.wider_face_mat".ljust(116, b" ")


def _savemat(path: str, mat: Dict) -> None:
    buffer = io.BytesIO()
    savemat(buffer, mat, do_compression=True)
    data = _MAT_HEADER + buffer.getvalue()[116:]
    with open(path, "wb") as f:
        f.write(data)


def write_wider_gt_mats(gt_dir: str, images: List[dict]) -> None:
    """Writes ``wider_face_val.mat`` and ``wider_{easy,medium,hard}_val.mat`` into ``gt_dir``
    in the official structure (see the module docstring), readable by the official
    ``evaluation.py`` and by :func:`read_wider_gt_mats`.

    Events keep the order of their first image; images keep their order within an event. Boxes
    are written as int32 when all are whole numbers (as the official files), else as doubles.
    Attributes (``"blur"``, ...) are written when every image has them.
    """
    attrs = _check_images(images)
    events: "OrderedDict[str, List[dict]]" = OrderedDict()
    for img in images:
        events.setdefault(str(img["event"]), []).append(img)

    all_boxes = [np.asarray(img["boxes"], dtype=np.float64).reshape(-1, 4) for img in images]
    integral = all(np.array_equal(b, np.round(b)) for b in all_boxes)

    def boxes_of(img):
        b = np.asarray(img["boxes"], dtype=np.float64).reshape(-1, 4)
        return b.astype(np.int32) if integral else b

    def per_event(fn):
        return _cell([_cell([fn(img) for img in imgs]) for imgs in events.values()])

    common = {
        "event_list": _cell(list(events)),
        "file_list": per_event(lambda img: str(img["file"])),
        "face_bbx_list": per_event(boxes_of),
    }
    for attr in attrs:
        common[f"{attr}_label_list"] = per_event(
            lambda img, a=attr: np.asarray(img[a]).reshape(-1, 1).astype(np.uint8)
        )

    def keep_of(img, subset):
        n = len(np.asarray(img["boxes"]).reshape(-1, 4))
        keep = np.asarray(img["keep"][subset], dtype=np.int64).reshape(-1, 1) + 1  # 1-based
        return keep.astype(_index_dtype(n))

    os.makedirs(gt_dir, exist_ok=True)
    _savemat(os.path.join(gt_dir, GT_FILE), common)
    for subset, name in SUBSET_FILES.items():
        mat = dict(common, gt_list=per_event(lambda img, s=subset: keep_of(img, s)))
        _savemat(os.path.join(gt_dir, name), mat)


def _load(path: str, keys: Sequence[str]) -> Dict[str, np.ndarray]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"WIDER FACE ground truth: no file {path}")
    mat = loadmat(path)
    for key in keys:
        if key not in mat:
            raise ValueError(f"{path}: no variable {key!r} (has {sorted(mat)})")
    return mat


def _names(cells: np.ndarray, path: str, what: str) -> List[str]:
    """(n, 1) cell of char arrays -> names."""
    try:
        return [str(c[0][0]) if np.size(c[0]) else "" for c in cells]
    except (IndexError, TypeError) as e:
        raise ValueError(f"{path}: {what} is not an (n, 1) cell of strings") from e


def read_wider_gt_mats(gt_dir: str) -> List[dict]:
    """The images of the four official ground-truth files in ``gt_dir``, in file order.

    Returns one dict per image (see the module docstring): boxes as float64 (N, 4) ``x y w h``
    (as the official evaluation casts them), keep-lists 0-based int64. Raises naming the file,
    event and image when the files disagree (a subset file listing other events or images than
    ``wider_face_val.mat``) or a keep index is outside the image's faces.
    """
    gt_path = os.path.join(gt_dir, GT_FILE)
    gt = _load(gt_path, ("event_list", "file_list", "face_bbx_list"))
    events = _names(gt["event_list"], gt_path, "event_list")
    files = [
        _names(gt["file_list"][e][0], gt_path, f"file_list of event {name!r}")
        for e, name in enumerate(events)
    ]
    attrs = [a for a in ATTRIBUTES if f"{a}_label_list" in gt]
    images = []
    for e, event in enumerate(events):
        boxes = gt["face_bbx_list"][e][0]
        if len(boxes) != len(files[e]):
            raise ValueError(
                f"{gt_path}: event {event!r} has {len(files[e])} files and {len(boxes)} box lists"
            )
        for j, file in enumerate(files[e]):
            b = np.asarray(boxes[j][0], dtype=np.float64)
            if b.size and (b.ndim != 2 or b.shape[1] != 4):
                raise ValueError(f"{gt_path}: {event}/{file}: boxes must be (N, 4), got {b.shape}")
            img = {"event": event, "file": file, "boxes": b.reshape(-1, 4), "keep": {}}
            for attr in attrs:
                values = np.asarray(gt[f"{attr}_label_list"][e][0][j][0], dtype=np.int64)
                img[attr] = values.reshape(-1)
            images.append(img)

    for subset, name in SUBSET_FILES.items():
        path = os.path.join(gt_dir, name)
        mat = _load(path, ("event_list", "file_list", "gt_list"))
        sub_events = _names(mat["event_list"], path, "event_list")
        if sub_events != events:
            raise ValueError(f"{path}: event_list differs from {gt_path}'s")
        k = 0
        for e, event in enumerate(events):
            sub_files = _names(mat["file_list"][e][0], path, f"file_list of event {event!r}")
            if sub_files != files[e]:
                raise ValueError(f"{path}: file_list of event {event!r} differs from {gt_path}'s")
            keeps = mat["gt_list"][e][0]
            if len(keeps) != len(sub_files):
                raise ValueError(f"{path}: event {event!r}: gt_list has {len(keeps)} entries")
            for j in range(len(sub_files)):
                img = images[k]
                keep = np.asarray(keeps[j][0], dtype=np.int64).reshape(-1) - 1
                if keep.size and (keep.min() < 0 or keep.max() >= len(img["boxes"])):
                    raise ValueError(
                        f"{path}: {event}/{img['file']}: gt_list indices must be in "
                        f"[1, {len(img['boxes'])}], got {(keep + 1).tolist()}"
                    )
                img["keep"][subset] = keep
                k += 1
    return images
