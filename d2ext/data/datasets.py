"""Datasets registered from the config (``DATASETS.REGISTER``) instead of Python code.

Each entry is a tuple of strings ``(name, format, annotation_file, image_root, *extra)``;
``format`` is a key of :data:`DATASET_FORMATS` and ``extra`` are the format's further paths:

==================  =======================================================================
format              entry
==================  =======================================================================
``coco``            ``(name, "coco", instances_json, image_root)``
``coco_panoptic``   ``(name, "coco_panoptic", panoptic_json, image_root, panoptic_root
                    [, instances_json])``: D2's "standard" panoptic registration
                    (``evaluator_type="coco_panoptic_seg"``); with ``instances_json`` the
                    instance masks are evaluated with COCO AP too
``ibug_pts``        ``(name, "ibug_pts", pts_dir, image_root[, visibility_json])``: 68-point
                    iBUG / 300-W ``.pts`` faces (``pts_dir`` may be ``image_root``: the
                    300-W layout keeps each ``.pts`` beside its image), iBUG metadata
                    (``evaluator_type="landmark"``); see ``d2ext.data.ibug_pts``
``widerface``       ``(name, "widerface", label_txt, image_root[, gt_dir])``: RetinaFace's
                    ``retinaface_gt_v1.1`` ``label.txt`` (boxes + five landmarks), images at
                    ``image_root/<event>/<file>.jpg``; ``gt_dir``: the folder of the four
                    official ``.mat`` files (``evaluator_type="widerface"``); see
                    ``d2ext.data.wider_face``
``wider_bbx``       ``(name, "wider_bbx", bbx_gt_txt, image_root[, gt_dir])``: the plain WIDER
                    ``wider_face_{train,val}_bbx_gt.txt`` (boxes + attributes, no landmarks)
``densepose_coco``  ``(name, "densepose_coco", densepose_json, image_root[, uv_symmetry_mat])``:
                    DensePose-COCO (COCO instances + ``dp_*`` points and part masks);
                    ``uv_symmetry_mat``: the ``UV_symmetry_transforms.mat`` for flipping
                    (default: the synthetic figures' table; ``evaluator_type="densepose"``);
                    see ``d2ext.data.densepose_coco``
``youtube_vis``     ``(name, "youtube_vis", vis_json, image_root[, flow_root])``: YouTube-VIS
                    video instance segmentation, one D2 dict per frame with ``track_id``,
                    ``video_id``, ``frame_idx`` (``evaluator_type="coco"``); ``image_root``:
                    the ``JPEGImages`` folder; ``flow_root``: ``<video>/<frame>.npy`` flows.
                    Format ``youtube_vis_clips`` takes the same paths and gives one dict per
                    video (``evaluator_type="youtube_vis"``); see ``d2ext.data.youtube_vis``
``cityscapes_vps``  ``(name, "cityscapes_vps", panoptic_gt_json, image_root[, panoptic_root])``:
                    Cityscapes-VPS video panoptic segmentation (``panoptic_gt_<split>_city_
                    vps.json``, ``<split>/img``; ``panoptic_root`` defaults to the
                    ``panoptic_video`` folder beside ``image_root``), one dict per annotated
                    frame with ``video_id``, ``frame_idx``, ``pan_seg_file_name``,
                    ``segments_info`` (``evaluator_type="cityscapes_vps"``: VPQ); see
                    ``d2ext.data.cityscapes_vps``
==================  =======================================================================

From the command line::

    python tools/train_net.py --config-file ... \\
        DATASETS.REGISTER "[('my_train', 'coco', 'ann/train.json', 'images/train')]" \\
        DATASETS.TRAIN "('my_train',)"

Registration goes through D2's ``register_coco_instances`` / ``register_coco_panoptic``, so the
loaders, metadata keys and evaluators are D2's; the class names and dataset-id -> contiguous-id
maps are read from the json's ``categories`` at registration (as D2's own loader would set them
on first load), so the Visualizer and evaluators have them before any data is loaded. Relative
paths are resolved against the working directory.

A new format is one function ``register(name, annotation_file, image_root, *extra)`` that checks
its files and calls D2's (or its own) registration, plus one entry in :data:`DATASET_FORMATS`.
"""

import inspect
import json
import logging
import os
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances, register_coco_panoptic

from .cityscapes_vps import register_cityscapes_vps
from .densepose_coco import register_densepose_coco
from .ibug_pts import register_ibug_pts
from .wider_face import register_wider_bbx, register_wider_face
from .youtube_vis import register_youtube_vis, register_youtube_vis_clips

logger = logging.getLogger(__name__)

__all__ = [
    "DATASET_FORMATS",
    "register_dataset",
    "register_datasets",
    "coco_instances_metadata",
    "coco_panoptic_metadata",
]


def _require(path: str, what: str, *, is_dir: bool = False) -> None:
    ok = os.path.isdir(path) if is_dir else os.path.isfile(path)
    if not ok:
        kind = "directory" if is_dir else "file"
        raise FileNotFoundError(f"{what}: {kind} {path!r} does not exist")


def _read_categories(json_file: str, what: str) -> List[Dict]:
    """The ``categories`` of a COCO-style json file, or an error naming the file."""
    with open(json_file) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{what}: {json_file!r} is not valid json ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(
            f"{what}: {json_file!r} holds a {type(data).__name__}, not a COCO json object"
        )
    categories = data.get("categories")
    if not categories:
        raise ValueError(f"{what}: {json_file!r} has no 'categories'")
    return sorted(categories, key=lambda c: c["id"])


def _colors(categories: Sequence[Dict]) -> Optional[List]:
    """Category colors when every category has one (else the Visualizer picks its own)."""
    if all("color" in c for c in categories):
        return [list(c["color"]) for c in categories]
    return None


def coco_instances_metadata(categories: Sequence[Dict]) -> Dict:
    """D2 metadata of a COCO instances json: exactly the ``thing_classes`` and
    ``thing_dataset_id_to_contiguous_id`` that D2's ``load_coco_json`` sets (categories sorted
    by id, contiguous ids 0..C-1 in that order), plus ``thing_colors`` if the json has colors."""
    categories = sorted(categories, key=lambda c: c["id"])
    meta = {
        "thing_classes": [c["name"] for c in categories],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(categories)},
    }
    colors = _colors(categories)
    if colors is not None:
        meta["thing_colors"] = colors
    return meta


def coco_panoptic_metadata(categories: Sequence[Dict]) -> Dict:
    """D2 "standard" panoptic metadata (as D2 builds ``coco_panoptic_standard``'s from
    ``COCO_CATEGORIES``): one contiguous id space over things and stuff in category-id order,
    with the full class list under both ``thing_classes`` and ``stuff_classes``. Every category
    needs ``isthing``."""
    categories = sorted(categories, key=lambda c: c["id"])
    missing = [c.get("name", c["id"]) for c in categories if "isthing" not in c]
    if missing:
        raise ValueError(f"panoptic categories without 'isthing': {missing}")
    names = [c["name"] for c in categories]
    meta = {
        "thing_classes": names,
        "stuff_classes": list(names),
        "thing_dataset_id_to_contiguous_id": {
            c["id"]: i for i, c in enumerate(categories) if c["isthing"]
        },
        "stuff_dataset_id_to_contiguous_id": {
            c["id"]: i for i, c in enumerate(categories) if not c["isthing"]
        },
    }
    colors = _colors(categories)
    if colors is not None:
        meta["thing_colors"] = colors
        meta["stuff_colors"] = [list(c) for c in colors]
    return meta


def register_coco(name: str, instances_json: str, image_root: str) -> None:
    """``coco``: COCO instances json + image folder (D2's ``register_coco_instances``)."""
    what = f"dataset {name!r} (coco)"
    _require(instances_json, f"{what} annotation json")
    _require(image_root, f"{what} image root", is_dir=True)
    meta = coco_instances_metadata(_read_categories(instances_json, what))
    register_coco_instances(name, meta, instances_json, image_root)


def register_coco_panoptic_standard(
    name: str,
    panoptic_json: str,
    image_root: str,
    panoptic_root: str,
    instances_json: Optional[str] = None,
) -> None:
    """``coco_panoptic``: panoptic json + image folder + panoptic PNG folder, optionally the
    instances json (D2's ``register_coco_panoptic``; images are ``<png stem>.jpg`` as in D2's
    loader)."""
    what = f"dataset {name!r} (coco_panoptic)"
    _require(panoptic_json, f"{what} panoptic json")
    _require(image_root, f"{what} image root", is_dir=True)
    _require(panoptic_root, f"{what} panoptic root", is_dir=True)
    if instances_json is not None:
        _require(instances_json, f"{what} instances json")
    try:
        meta = coco_panoptic_metadata(_read_categories(panoptic_json, what))
    except ValueError as e:
        raise ValueError(f"{what}: {panoptic_json!r}: {e}") from None
    register_coco_panoptic(name, meta, image_root, panoptic_root, panoptic_json, instances_json)


def register_ibug(
    name: str, pts_dir: str, image_root: str, visibility_json: Optional[str] = None
) -> None:
    """``ibug_pts``: a folder of 68-point ``.pts`` files + the image folder they mirror
    (:func:`d2ext.data.ibug_pts.register_ibug_pts`), optionally a visibility json."""
    what = f"dataset {name!r} (ibug_pts)"
    _require(pts_dir, f"{what} pts folder", is_dir=True)
    _require(image_root, f"{what} image root", is_dir=True)
    if visibility_json is not None:
        _require(visibility_json, f"{what} visibility json")
    register_ibug_pts(name, image_root, pts_dir, visibility_json)


# format -> register(name, annotation_file, image_root, *extra); one entry per format
DATASET_FORMATS: Dict[str, Callable[..., None]] = {
    "coco": register_coco,
    "coco_panoptic": register_coco_panoptic_standard,
    "ibug_pts": register_ibug,
    "widerface": register_wider_face,
    "wider_bbx": register_wider_bbx,
    "densepose_coco": register_densepose_coco,
    "youtube_vis": register_youtube_vis,
    "youtube_vis_clips": register_youtube_vis_clips,
    "cityscapes_vps": register_cityscapes_vps,
}

# name -> the normalized entry it was registered with (makes re-registration a no-op)
_REGISTERED: Dict[str, Tuple[str, ...]] = {}


def _arity(fn: Callable) -> Tuple[int, int]:
    """(min, max) number of paths after the name that ``fn`` takes."""
    params = list(inspect.signature(fn).parameters.values())[1:]
    required = sum(p.default is inspect.Parameter.empty for p in params)
    return required, len(params)


def _usage(fmt: str) -> str:
    params = list(inspect.signature(DATASET_FORMATS[fmt]).parameters.values())[1:]
    args = [p.name if p.default is inspect.Parameter.empty else f"[{p.name}]" for p in params]
    return f"(name, {fmt!r}, {', '.join(args)})"


def _normalize(entry) -> Tuple[str, ...]:
    if isinstance(entry, str) or not isinstance(entry, (list, tuple)):
        raise ValueError(
            f"DATASETS.REGISTER entry {entry!r}: expected a tuple (name, format, annotation "
            "file, image root, ...); DATASETS.REGISTER is a list of such tuples"
        )
    if len(entry) < 2 or not all(isinstance(x, str) for x in entry):
        raise ValueError(
            f"DATASETS.REGISTER entry {tuple(entry)!r}: expected strings "
            "(name, format, annotation file, image root, ...)"
        )
    name, fmt, *paths = entry
    if fmt not in DATASET_FORMATS:
        raise ValueError(
            f"DATASETS.REGISTER entry for {name!r}: unknown format {fmt!r}; known formats: "
            f"{', '.join(sorted(DATASET_FORMATS))}"
        )
    lo, hi = _arity(DATASET_FORMATS[fmt])
    if not lo <= len(paths) <= hi:
        raise ValueError(
            f"DATASETS.REGISTER entry {tuple(entry)!r}: format {fmt!r} takes {_usage(fmt)}"
        )
    paths = [os.path.abspath(os.path.expanduser(p)) for p in paths]
    return (name, fmt, *paths)


def register_dataset(entry: Sequence[str]) -> str:
    """Register one ``(name, format, annotation_file, image_root, *extra)`` entry in D2's
    catalogs; returns its name.

    Registering the same entry again is a no-op; another entry under a name that is already
    registered (by this function, a D2 builtin or user code) is a ``ValueError``. A missing file
    is a ``FileNotFoundError`` naming it, an unknown format a ``ValueError`` listing the known ones.
    """
    normalized = _normalize(entry)
    name, fmt, *paths = normalized
    if name in _REGISTERED and name not in DatasetCatalog.list():
        del _REGISTERED[name]  # removed from D2's catalog since: register afresh
    if name in _REGISTERED:
        if _REGISTERED[name] == normalized:
            return name
        raise ValueError(
            f"dataset {name!r} is already registered as {_REGISTERED[name]}; "
            f"DATASETS.REGISTER cannot register it again as {normalized}"
        )
    if name in DatasetCatalog.list():
        raise ValueError(
            f"dataset {name!r} is already registered (a D2 builtin or registered in code); "
            "choose another name in DATASETS.REGISTER"
        )
    had_metadata = name in MetadataCatalog.list()  # e.g. set up by the user beforehand
    try:
        DATASET_FORMATS[fmt](name, *paths)
    except Exception:
        # leave no half-registered name behind (a failure after DatasetCatalog.register)
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            if not had_metadata:
                MetadataCatalog.remove(name)
        raise
    _REGISTERED[name] = normalized
    logger.info("Registered dataset %r (%s) from %s", name, fmt, paths)
    return name


def register_datasets(entries: Iterable[Sequence[str]]) -> List[str]:
    """:func:`register_dataset` for each entry (``cfg.DATASETS.REGISTER``); returns the names.

    LazyConfig users call it at the top of their ``.py`` config (which D2 executes on load) or
    in their training script, before the names are used."""
    if isinstance(entries, (list, tuple)) and entries and all(isinstance(x, str) for x in entries):
        raise ValueError(
            f"DATASETS.REGISTER={tuple(entries)!r} looks like a single entry: it must be a list "
            "of entries, e.g. [('my_train', 'coco', 'ann.json', 'images/')]"
        )
    return [register_dataset(e) for e in entries]
