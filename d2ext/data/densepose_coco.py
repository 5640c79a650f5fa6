"""DensePose-COCO annotations as D2 datasets.

DensePose-COCO is a COCO instances json whose person annotations may carry, besides the box and
mask, the DensePose keys (Güler et al., CVPR 2018):

* ``dp_x``, ``dp_y``: P annotated points, in [0, 256) relative to the annotation's ``bbox``
  (``x_img = x0 + dp_x * w / 256``);
* ``dp_I`` (fine part 1..24, 0 = background), ``dp_U``, ``dp_V`` (chart coordinates in [0, 1]);
* ``dp_masks``: 14 COCO RLEs (an empty entry for an absent part) of 256 x 256 over the box, the
  coarse parts 1..14.

:func:`load_densepose_coco_json` is D2's ``load_coco_json`` with those keys kept (lists, as in
the file), after checking them: a person with a box but no points has no DensePose data (its
``dp_*`` keys are dropped: ``DensePoseData`` None downstream); without ``dp_masks`` the coarse
map is None; an unknown part index or a ``dp_masks`` of another length than 14 is an error
naming the annotation id and the file. :func:`annotation_to_densepose_data` turns the keys of
one annotation into :class:`~d2ext.structures.DensePoseData`.

Metadata of :func:`register_densepose_coco`: D2's COCO instance keys, ``json_file``,
``image_root``, ``evaluator_type="densepose"`` and ``densepose_transform_src`` (the
``UV_symmetry_transforms.mat`` given, else None: the train mapper then refuses to mirror it, as
the original does without a table).
"""

import functools
import os
from typing import Dict, List, Optional

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from d2ext.structures import DensePoseData

from .densepose_flip import NUM_COARSE_PARTS, NUM_PARTS

__all__ = [
    "register_densepose_coco_builtins",
    "DENSEPOSE_KEYS",
    "DENSEPOSE_POINT_KEYS",
    "annotation_to_densepose_data",
    "check_densepose_annotation",
    "decode_dp_masks",
    "densepose_coco_metadata",
    "load_densepose_coco_json",
    "register_densepose_coco",
]

DENSEPOSE_POINT_KEYS = ("dp_x", "dp_y", "dp_I", "dp_U", "dp_V")
DENSEPOSE_KEYS = DENSEPOSE_POINT_KEYS + ("dp_masks",)
MASK_SIZE = 256


def _where(ann: Dict, json_file: str) -> str:
    return f"{json_file!r}, annotation id {ann.get('id', '?')} (image {ann.get('image_id', '?')})"


def check_densepose_annotation(ann: Dict, json_file: str) -> None:
    """Validate (in place) the DensePose keys of one json or D2 annotation: points of equal
    length, part labels in 0..24, 14 ``dp_masks``; a person without points loses its ``dp_*``
    keys. Raises ``ValueError`` naming the annotation and file."""
    n_points = len(ann.get("dp_x") or [])
    if n_points == 0:
        for key in DENSEPOSE_KEYS:
            ann.pop(key, None)
        return
    missing = [k for k in DENSEPOSE_POINT_KEYS if k not in ann]
    if missing:
        raise ValueError(f"DensePose points without {missing} in {_where(ann, json_file)}")
    lengths = {k: len(ann[k]) for k in DENSEPOSE_POINT_KEYS}
    if len(set(lengths.values())) != 1:
        raise ValueError(
            f"DensePose point lists of unequal length {lengths} in {_where(ann, json_file)}"
        )
    parts = np.asarray(ann["dp_I"], dtype=np.float64)
    bad = parts[(parts != np.round(parts)) | (parts < 0) | (parts > NUM_PARTS)]
    if len(bad):
        raise ValueError(
            f"unknown DensePose part index {bad[0]:g} in dp_I (parts are 0..{NUM_PARTS}) "
            f"in {_where(ann, json_file)}"
        )
    masks = ann.get("dp_masks")
    if masks is not None and (not isinstance(masks, list) or len(masks) != NUM_COARSE_PARTS):
        got = len(masks) if isinstance(masks, list) else type(masks).__name__
        raise ValueError(
            f"dp_masks must list {NUM_COARSE_PARTS} part RLEs, got {got} "
            f"in {_where(ann, json_file)}"
        )


def load_densepose_coco_json(
    json_file: str, image_root: str, dataset_name: Optional[str] = None
) -> List[Dict]:
    """D2 dataset dicts of a DensePose-COCO json: D2's ``load_coco_json`` keeping the
    annotation ``id`` and the DensePose keys (validated, see :func:`check_densepose_annotation`)."""
    dicts = load_coco_json(
        json_file, image_root, dataset_name, extra_annotation_keys=["id", *DENSEPOSE_KEYS]
    )
    for record in dicts:
        for ann in record.get("annotations", []):
            ann.setdefault("image_id", record["image_id"])
            check_densepose_annotation(ann, json_file)
    return dicts


def decode_dp_masks(dp_masks: List) -> torch.Tensor:
    """(256, 256) uint8 coarse part map of the 14 part RLEs (later parts over earlier, as the
    original; an empty entry is an absent part)."""
    segm = np.zeros((MASK_SIZE, MASK_SIZE), np.uint8)
    for k, rle in enumerate(dp_masks, start=1):
        if rle:
            if isinstance(rle.get("counts"), str):
                rle = {**rle, "counts": rle["counts"].encode("ascii")}
            m = mask_util.decode(rle)
            if m.shape[:2] != (MASK_SIZE, MASK_SIZE):
                raise ValueError(f"dp_masks part {k} is {m.shape[:2]}, expected 256 x 256")
            segm[m > 0] = k
    return torch.from_numpy(segm)


def annotation_to_densepose_data(ann: Dict) -> Optional[DensePoseData]:
    """``DensePoseData`` of an annotation's ``dp_*`` keys (as loaded), or None without points."""
    if not ann.get("dp_x"):
        return None
    x, y, u, v = (
        torch.as_tensor(ann[k], dtype=torch.float32) for k in ("dp_x", "dp_y", "dp_U", "dp_V")
    )
    i = torch.as_tensor(ann["dp_I"], dtype=torch.float64).round().long()
    masks = ann.get("dp_masks")
    segm = decode_dp_masks(masks) if masks is not None else None
    return DensePoseData(x, y, i, u, v, segm)


def densepose_coco_metadata(
    json_file: str, image_root: str, uv_symmetry_file: Optional[str] = None
) -> Dict:
    """Metadata of a DensePose-COCO dataset (categories read from ``json_file``)."""
    from .datasets import _read_categories, coco_instances_metadata

    categories = _read_categories(json_file, f"DensePose-COCO json {json_file!r}")
    return {
        **coco_instances_metadata(categories),
        "json_file": json_file,
        "image_root": image_root,
        "evaluator_type": "densepose",
        # None: no table, flips of this dataset are refused (the original requires one)
        "densepose_transform_src": uv_symmetry_file,
    }


def register_densepose_coco(
    name: str, json_file: str, image_root: str, uv_symmetry_file: Optional[str] = None
) -> None:
    """``densepose_coco``: a DensePose-COCO json + image folder, optionally the
    ``UV_symmetry_transforms.mat`` the flip augmentation uses (default: the synthetic figures'
    builtin table)."""
    what = f"dataset {name!r} (densepose_coco)"
    for path, kind in ((json_file, "annotation json"), (uv_symmetry_file, "UV symmetry file")):
        if path is not None and not os.path.isfile(path):
            raise FileNotFoundError(f"{what} {kind}: file {path!r} does not exist")
    if not os.path.isdir(image_root):
        raise FileNotFoundError(f"{what} image root: directory {image_root!r} does not exist")
    meta = densepose_coco_metadata(json_file, image_root, uv_symmetry_file)
    DatasetCatalog.register(
        name, functools.partial(load_densepose_coco_json, json_file, image_root, name)
    )
    MetadataCatalog.get(name).set(**meta)


# D2-style builtin names of the paper configs (D2 projects/DensePose's names and layout), under
# $DETECTRON2_DATASETS/coco; the flip table is the official UV_symmetry_transforms.mat there
_BUILTINS = {
    "densepose_coco_2014_train": ("annotations/densepose_train2014.json", "train2014"),
    "densepose_coco_2014_minival": ("annotations/densepose_minival2014.json", "val2014"),
    "densepose_coco_2014_valminusminival": (
        "annotations/densepose_valminusminival2014.json",
        "val2014",
    ),
}
_BUILTIN_UV_SYMMETRY = "annotations/UV_symmetry_transforms.mat"


def register_densepose_coco_builtins(root: Optional[str] = None) -> None:
    """Register :data:`_BUILTINS` under ``root`` (default ``$DETECTRON2_DATASETS`` or
    ``datasets``). Files are checked when a dataset is loaded (a missing one is a
    FileNotFoundError naming it), as D2's builtin COCO."""
    root = os.path.expanduser(root or os.environ.get("DETECTRON2_DATASETS", "datasets"))
    for name, (json_rel, images_rel) in _BUILTINS.items():
        if name in DatasetCatalog.list():
            continue
        json_file = os.path.join(root, "coco", json_rel)
        image_root = os.path.join(root, "coco", images_rel)

        def load(name=name, json_file=json_file, image_root=image_root):
            for path in (json_file, image_root):
                if not os.path.exists(path):
                    raise FileNotFoundError(
                        f"builtin dataset {name!r} (DensePose-COCO): {path!r} does not exist"
                    )
            return load_densepose_coco_json(json_file, image_root, name)

        DatasetCatalog.register(name, load)
        MetadataCatalog.get(name).set(
            thing_classes=["person"],
            thing_dataset_id_to_contiguous_id={1: 0},
            json_file=json_file,
            image_root=image_root,
            evaluator_type="densepose",
            densepose_transform_src=os.path.join(root, "coco", _BUILTIN_UV_SYMMETRY),
        )
