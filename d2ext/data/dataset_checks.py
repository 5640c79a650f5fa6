"""Bad-input handling for dataset loading: clear errors instead of crashes deep inside D2.

* :func:`validate_dataset_dicts`: checks dicts in D2's standard format against their metadata
  (contiguous category ids in range, boxes well-formed, panoptic segments known) and raises
  ``ValueError("<dataset>: image <file>: ...")`` naming the dataset, image and field.
* :func:`add_dataset_checks`: wraps registered ``DatasetCatalog`` loaders so every load (D2's
  ``get_detection_dataset_dicts`` included) is validated, and turns D2's bare ``KeyError`` /
  metadata assertion for a category id missing from the json/metadata into an error that
  names the offending image. The synthetic datasets are checked this way by default.
* :class:`SafeMapper`: wraps any dataset mapper; an unreadable/corrupt image (or label file)
  is skipped with a warning naming it at train time (returning None makes D2's
  ``MapDataset`` retry another index) and raises an error naming it at test time.

Images without annotations are *not* errors: D2 drops them at train time when
``DATALOADER.FILTER_EMPTY_ANNOTATIONS`` is True and keeps them for evaluation.
"""

import functools
import json
import logging
import math
from typing import Callable, Dict, Iterable, List, Optional

from detectron2.config import configurable
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from detectron2.data.detection_utils import SizeMismatchError
from detectron2.structures import BoxMode

logger = logging.getLogger(__name__)

__all__ = ["validate_dataset_dicts", "add_dataset_checks", "SafeMapper"]


def _classes(names: Optional[List[str]]) -> str:
    return "none" if names is None else f"0..{len(names) - 1} ({', '.join(names)})"


def _box_ok(box, mode) -> bool:
    """4 finite numbers; for absolute XYWH/XYXY boxes also a non-negative size."""
    if len(box) != 4 or not all(math.isfinite(float(v)) for v in box):
        return False
    if mode in (BoxMode.XYWH_ABS, BoxMode.XYWH_ABS.value):
        return box[2] >= 0 and box[3] >= 0
    if mode in (BoxMode.XYXY_ABS, BoxMode.XYXY_ABS.value):
        return box[2] >= box[0] and box[3] >= box[1]
    return True


def validate_dataset_dicts(dicts: List[Dict], dataset_name: str) -> List[Dict]:
    """Check D2-format ``dicts`` of ``dataset_name`` against ``MetadataCatalog.get(dataset_name)``;
    returns ``dicts`` unchanged or raises ``ValueError`` naming the dataset, image and field.

    Checked: every dict has ``file_name``; ``annotations[i]["category_id"]`` is an int in
    ``[0, len(thing_classes))`` (contiguous ids, as loaders produce them) and ``bbox`` has 4
    finite numbers with non-negative size; ``segments_info[i]["category_id"]`` is a contiguous
    thing/stuff id of the metadata.
    """
    meta = MetadataCatalog.get(dataset_name)
    things = meta.get("thing_classes", None)
    stuff = meta.get("stuff_classes", None)
    for idx, d in enumerate(dicts):
        if "file_name" not in d:
            raise ValueError(f"{dataset_name}: record {idx} has no 'file_name'")
        where = f"{dataset_name}: image {d['file_name']}"
        for j, ann in enumerate(d.get("annotations", [])):
            cid = ann.get("category_id")
            if things is None:
                raise ValueError(f"{where}: has annotations but metadata has no thing_classes")
            if not isinstance(cid, int) or not 0 <= cid < len(things):
                raise ValueError(
                    f"{where}: annotation {j} has category_id={cid!r}, not a contiguous id of "
                    f"metadata.thing_classes {_classes(things)}"
                )
            if "bbox" in ann and not _box_ok(ann["bbox"], ann.get("bbox_mode")):
                raise ValueError(f"{where}: annotation {j} has a malformed bbox {ann['bbox']!r}")
        for j, seg in enumerate(d.get("segments_info", [])):
            cid = seg.get("category_id")
            classes = things if seg.get("isthing", True) else stuff
            if classes is None or not isinstance(cid, int) or not 0 <= cid < len(classes):
                kind = "thing" if seg.get("isthing", True) else "stuff"
                raise ValueError(
                    f"{where}: segment {j} (id {seg.get('id')}) has {kind} category_id={cid!r}, "
                    f"not a contiguous id of metadata.{kind}_classes {_classes(classes)}"
                )
    return dicts


def _unknown_category_report(dataset_name: str) -> Optional[str]:
    """Explain which image of the dataset's json files uses a category id that its metadata
    (``thing/stuff_dataset_id_to_contiguous_id``) or its json ``categories`` does not know."""
    meta = MetadataCatalog.get(dataset_name)
    known = set(meta.get("thing_dataset_id_to_contiguous_id", {}))
    known |= set(meta.get("stuff_dataset_id_to_contiguous_id", {}))
    for key, field in (("json_file", "annotations"), ("panoptic_json", "segments_info")):
        path = meta.get(key, None)
        if not path:
            continue
        with open(path) as f:
            data = json.load(f)
        in_json = {c["id"] for c in data.get("categories", [])}
        allowed = in_json & known if known else in_json
        files = {im["id"]: im["file_name"] for im in data.get("images", [])}
        anns = data.get("annotations", [])
        if field == "segments_info":
            anns = [{**s, "image_id": a["image_id"]} for a in anns for s in a["segments_info"]]
        for ann in anns:
            cid = ann.get("category_id")
            if cid not in allowed:
                return (
                    f"{dataset_name}: image {files.get(ann.get('image_id'), ann.get('image_id'))} "
                    f"in {path}: category_id={cid} is not among the known category ids "
                    f"{sorted(allowed)} (metadata and the json's 'categories')"
                )
    return None


def _checked_load(dataset_name: str, load: Callable[[], List[Dict]]) -> List[Dict]:
    try:
        dicts = load()
    except (KeyError, AssertionError) as e:  # D2's load_coco_json / Metadata.set on a bad id
        report = _unknown_category_report(dataset_name)
        if report is None:
            raise
        raise ValueError(report) from e
    return validate_dataset_dicts(dicts, dataset_name)


def add_dataset_checks(dataset_names: Iterable[str]) -> None:
    """Make every later ``DatasetCatalog.get(name)`` of these registered datasets validated
    (see module doc). Idempotent; an unregistered name raises KeyError."""
    for name in [dataset_names] if isinstance(dataset_names, str) else dataset_names:
        if name not in DatasetCatalog.list():
            raise KeyError(
                f"Dataset {name!r} is not registered; available: {DatasetCatalog.list()}"
            )
        load = DatasetCatalog[name]  # the registered loader, not called here
        if isinstance(load, functools.partial) and load.func is _checked_load:
            continue
        DatasetCatalog.remove(name)
        DatasetCatalog.register(name, functools.partial(_checked_load, name, load))


class SafeMapper:
    """Wraps a dataset mapper so unreadable data files fail clearly.

    At train time (``is_train=True``) a record whose image or label file cannot be read
    (missing, corrupt, truncated, size not matching the record) is skipped: a warning names the
    file and None is returned, which D2's ``MapDataset`` answers by mapping another index. At
    test time the same raises ``OSError`` naming the file (evaluation must see every image).
    """

    @configurable
    def __init__(self, *, mapper: Callable[[Dict], Optional[Dict]], is_train: bool):
        """
        Args:
            mapper: maps a D2 dataset dict to model inputs (e.g. ``DatasetMapper``).
            is_train: skip (True) or raise (False) on an unreadable file.
        """
        self.mapper = mapper
        self.is_train = is_train

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        if is_train:
            from .build import build_train_mapper

            return {"mapper": build_train_mapper(cfg), "is_train": True}
        return {"mapper": DatasetMapper(cfg, is_train=False), "is_train": False}

    def __call__(self, dataset_dict: Dict) -> Optional[Dict]:
        try:
            return self.mapper(dataset_dict)
        except (OSError, SizeMismatchError) as e:  # PIL.UnidentifiedImageError is an OSError
            files = [
                dataset_dict[k]
                for k in ("file_name", "sem_seg_file_name", "pan_seg_file_name")
                if k in dataset_dict
            ]
            msg = f"cannot read data file(s) {files}: {type(e).__name__}: {e}"
            if not self.is_train:
                raise OSError(msg) from e
            logger.warning(f"Skipping image {dataset_dict.get('file_name')}: {msg}")
            return None
