"""Cityscapes-VPS (Kim et al., CVPR 2020) video panoptic annotations as a D2 dataset.

The layout of mcahny/vps (``data/cityscapes_vps``)::

    panoptic_gt_<split>_city_vps.json   images, annotations (segments_info), categories
    <split>/img/<images[].file_name>    the annotated frames (every 5th raw frame, 6 per video)
    <split>/panoptic_video/<png>        gt PNGs, id = R + 256 G + 256^2 B, 0 = VOID

Image ids and names are ``VVVV_FFFF_<city>_<seq>_<frame>``: the video, the frame's running index
over the split, the Cityscapes sequence and frame number. Images are ``..._newImg8bit.png``, and
``..._leftImg8bit.png`` for the frame that is the original Cityscapes gtFine frame; their gt PNGs
are ``..._final_mask.png`` / ``..._gtFine_color.png`` (:func:`gt_png_name`, the official
evaluator's rule; an annotation's ``file_name`` names it too). Stuff ids are the class colour
in every frame, a thing keeps one id over its video.

:func:`load_cityscapes_vps_json` gives one D2 dict per annotated frame, videos and frames in
json order::

    {"file_name", "height", "width", "image_id" (the json's string id), "video_id" (VVVV, or the
     image's "video_id"), "frame_idx" (0-based among the video's annotated frames), "length"
     (annotated frames of the video), "pan_seg_file_name", "segments_info": [{"id",
     "category_id" (contiguous), "isthing", "iscrowd", "area"}]}

Metadata is D2's "standard" panoptic metadata (one contiguous space over things and stuff, see
:func:`d2ext.data.datasets.coco_panoptic_metadata`; Cityscapes-VPS's ids 0-18 map to
themselves), ``panoptic_json``, ``panoptic_root``, ``image_root``, ``frames_per_video`` (6,
the official evaluation's) and ``evaluator_type="cityscapes_vps"`` (VPQ,
:class:`d2ext.evaluation.VPQEvaluator`). Malformed jsons are ``ValueError``\\ s naming the file
and the image or key; missing frame files are reported when read, as for D2's COCO loader.
"""

import functools
import json
import os
from typing import Dict, List, Optional

from detectron2.data import DatasetCatalog, MetadataCatalog

__all__ = [
    "gt_png_name",
    "load_cityscapes_vps_json",
    "register_cityscapes_vps",
    "register_cityscapes_vps_files",
    "video_id_of",
]

# annotated frames per video in Cityscapes-VPS, as the official eval_vpq.py hard-codes
FRAMES_PER_VIDEO = 6


def gt_png_name(image_file_name: str) -> str:
    """The gt PNG of an image, by the official ``eval_vpq.py``'s renaming."""
    return image_file_name.replace("_newImg8bit.png", "_final_mask.png").replace(
        "_leftImg8bit.png", "_gtFine_color.png"
    )


def video_id_of(image: Dict, json_file: str):
    """An image's video: its ``video_id``, else the ``VVVV`` of its id ``VVVV_FFFF_...``."""
    if "video_id" in image:
        return image["video_id"]
    image_id = image.get("id")
    if not isinstance(image_id, str) or "_" not in image_id:
        raise ValueError(
            f"{json_file!r}: image {image_id!r} has no 'video_id' and its id is not of the "
            f"Cityscapes-VPS form 'VVVV_FFFF_<city>_<seq>_<frame>' naming its video"
        )
    return image_id.split("_", 1)[0]


def _read_json(json_file: str) -> Dict:
    with open(json_file) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"Cityscapes-VPS json {json_file!r} is not valid json ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"Cityscapes-VPS json {json_file!r} is not a json object")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"Cityscapes-VPS json {json_file!r} has no '{key}' list")
    return data


def _segments(ann: Dict, where: str, category_map: Dict[int, int], isthing: Dict[int, bool]):
    out = []
    for j, s in enumerate(ann["segments_info"]):
        missing = [k for k in ("id", "category_id", "area") if k not in s]
        if missing:
            raise ValueError(f"{where}, segments_info[{j}]: no {missing}")
        if s["category_id"] not in category_map:
            raise ValueError(
                f"{where}, segment id {s['id']}: category_id {s['category_id']!r} is not among "
                f"the json's categories {sorted(category_map)}"
            )
        out.append(
            {
                "id": int(s["id"]),
                "category_id": category_map[s["category_id"]],
                "isthing": isthing[s["category_id"]],
                "iscrowd": int(s.get("iscrowd", 0)),
                "area": s["area"],
            }
        )
    return out


def load_cityscapes_vps_json(panoptic_json: str, image_root: str, panoptic_root: str) -> List[Dict]:
    """Per-frame D2 dicts (module doc) of a Cityscapes-VPS panoptic json."""
    data = _read_json(panoptic_json)
    categories = sorted(data["categories"], key=lambda c: c["id"])
    category_map = {c["id"]: i for i, c in enumerate(categories)}
    isthing = {c["id"]: bool(c.get("isthing", 0)) for c in categories}
    annotations: Dict[object, Dict] = {}
    for i, ann in enumerate(data["annotations"]):
        for key in ("image_id", "segments_info"):
            if key not in ann:
                raise ValueError(f"{panoptic_json!r}: annotations[{i}] has no '{key}'")
        if ann["image_id"] in annotations:
            raise ValueError(f"{panoptic_json!r}: two annotations for image {ann['image_id']!r}")
        annotations[ann["image_id"]] = ann
    videos: Dict[object, List[Dict]] = {}
    for i, image in enumerate(data["images"]):
        missing = [k for k in ("id", "file_name", "height", "width") if k not in image]
        if missing:
            raise ValueError(f"{panoptic_json!r}: images[{i}] has no {missing}")
        where = f"{panoptic_json!r}, image {image['id']!r}"
        ann = annotations.pop(image["id"], None)
        if ann is None:
            raise ValueError(f"{where}: no annotation (segments_info) for the image")
        videos.setdefault(video_id_of(image, panoptic_json), []).append(
            {
                "file_name": os.path.join(image_root, image["file_name"]),
                "height": image["height"],
                "width": image["width"],
                "image_id": image["id"],
                "pan_seg_file_name": os.path.join(
                    panoptic_root, ann.get("file_name") or gt_png_name(image["file_name"])
                ),
                "segments_info": _segments(ann, where, category_map, isthing),
            }
        )
    if annotations:
        raise ValueError(
            f"{panoptic_json!r}: annotations of images not in 'images': {list(annotations)[:5]}"
        )
    dicts = []
    for video, frames in videos.items():
        for t, frame in enumerate(frames):
            dicts.append({**frame, "video_id": video, "frame_idx": t, "length": len(frames)})
    return dicts


def register_cityscapes_vps(
    name: str, panoptic_json: str, image_root: str, panoptic_root: Optional[str] = None
) -> None:
    """``cityscapes_vps``: ``panoptic_gt_<split>_city_vps.json`` + ``<split>/img`` (+ the gt
    PNG folder, default ``panoptic_video`` beside ``image_root``)."""
    from .datasets import _read_categories, _require, coco_panoptic_metadata

    what = f"dataset {name!r} (cityscapes_vps)"
    if panoptic_root is None:
        panoptic_root = os.path.join(
            os.path.dirname(os.path.normpath(image_root)), "panoptic_video"
        )
    _require(panoptic_json, f"{what} panoptic json")
    _require(image_root, f"{what} image root", is_dir=True)
    _require(panoptic_root, f"{what} panoptic root", is_dir=True)
    try:
        meta = coco_panoptic_metadata(_read_categories(panoptic_json, what))
    except ValueError as e:
        raise ValueError(f"{what}: {panoptic_json!r}: {e}") from None
    register_cityscapes_vps_files(name, meta, panoptic_json, image_root, panoptic_root)


def register_cityscapes_vps_files(
    name: str, meta: Dict, panoptic_json: str, image_root: str, panoptic_root: str, **extra
) -> None:
    """Register ``name`` as a Cityscapes-VPS split whose files may not exist yet (read on
    first use): the loader, ``meta`` (D2 panoptic metadata: classes, contiguous id maps), the
    file locations, VPQ's ``frames_per_video`` and ``evaluator_type``, plus ``extra`` keys."""
    DatasetCatalog.register(
        name,
        functools.partial(load_cityscapes_vps_json, panoptic_json, image_root, panoptic_root),
    )
    MetadataCatalog.get(name).set(
        **meta,
        panoptic_json=panoptic_json,
        panoptic_root=panoptic_root,
        image_root=image_root,
        frames_per_video=FRAMES_PER_VIDEO,
        evaluator_type="cityscapes_vps",
        **extra,
    )
