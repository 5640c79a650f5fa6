"""YouTube-VIS video instance segmentation annotations as D2 datasets, per frame and per clip.

A YouTube-VIS json (Yang et al., ICCV 2019; the 2019/2021 releases and OVIS share the layout)
holds ``videos`` (``id``, ``width``, ``height``, ``length``, ``file_names`` relative to the
``JPEGImages`` folder), ``categories`` and ``annotations``: one per object track, with
``video_id``, ``category_id``, ``iscrowd`` and one entry per frame in ``segmentations`` (COCO RLE,
uncompressed in the official files, or None where the object is absent), ``bboxes`` (XYWH or
None) and ``areas`` (or None).

:func:`load_youtube_vis_clips` gives one dict per video::

    {"video_id", "height", "width", "length", "file_names": [abs path per frame],
     "frames": [per-frame dict, ...]}

and :func:`load_youtube_vis_json` the per-frame dicts of all videos, in D2's standard format::

    {"file_name", "height", "width", "image_id" (1, 2, ... over the split, videos in json
     order), "video_id", "frame_idx" (0-based position in file_names), "length",
     "video_frames" (the video's frame paths), "flow_file" (<flow_root>/<frame stem>.npy: the
     frame t -> t+1 flow, None on the last frame and without a flow root),
     "annotations": [{"bbox" (XYWH_ABS), "bbox_mode", "segmentation" (compressed RLE, str
     counts), "category_id" (contiguous), "iscrowd", "track_id" (the annotation id)}]}

An object is in a frame's ``annotations`` where its segmentation is not None and not empty; its
box is the json's, or the mask's where the json gives none. Real YouTube-VIS has no flow
(``flow_file`` None); the synthetic videos (``d2ext.data.synthetic.videos``) write the exact one.

Bad inputs are ``ValueError``\\ s naming the json and the video / annotation id: per-frame lists
whose length is not the video's, an empty ``segmentations`` list, a box without a mask, a mask of
another size than the video, unknown video or category ids. Missing or unreadable frame files
are reported when read (:class:`d2ext.data.SafeMapper`), as for D2's COCO loader.

Per-frame metadata has ``evaluator_type="coco"`` (per-frame mask AP; D2's ``COCOEvaluator``
converts the dicts, so no COCO ``json_file`` is set); per-clip ``"youtube_vis"`` (video AP, and
with ``frame_dataset`` naming the per-frame dataset the frames' AP of the same pass). Both have
``youtube_vis_json``, ``image_root`` and ``flow_root``.
"""

import functools
import json
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from d2ext.layers import rle_run_lengths

__all__ = [
    "load_youtube_vis_clips",
    "load_youtube_vis_json",
    "register_youtube_vis",
    "register_youtube_vis_clips",
    "write_youtube_vis_json",
    "youtube_vis_annotation",
    "youtube_vis_metadata",
]

_PER_FRAME_KEYS = ("segmentations", "bboxes", "areas")


def _read_json(json_file: str) -> Dict:
    with open(json_file) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"YouTube-VIS json {json_file!r} is not valid json ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("videos"), list):
        raise ValueError(f"YouTube-VIS json {json_file!r} has no 'videos' list")
    return data


def _check_video(video: Dict, json_file: str) -> None:
    where = f"{json_file!r}, video id {video.get('id', '?')}"
    names = video.get("file_names")
    if not isinstance(names, list) or not names:
        raise ValueError(f"{where}: 'file_names' must list the video's frames, got {names!r}")
    length = video.get("length", len(names))
    if length != len(names):
        raise ValueError(f"{where}: 'length' is {length} but 'file_names' lists {len(names)}")
    for key in ("id", "height", "width"):
        if not isinstance(video.get(key), int):
            raise ValueError(f"{where}: '{key}' must be an int, got {video.get(key)!r}")


def _frame_rle(seg, height: int, width: int, where: str) -> Dict:
    """Compressed RLE (str counts) of one frame's segmentation: RLE (uncompressed as the official
    files, or compressed) or COCO polygons, of the video's size."""
    if isinstance(seg, dict):
        if list(seg.get("size", [])) != [height, width]:
            raise ValueError(
                f"{where}: RLE of size {seg.get('size')}, the video is {[height, width]}"
            )
        if isinstance(seg.get("counts"), list):
            seg = mask_util.frPyObjects(seg, height, width)
    elif isinstance(seg, list):
        seg = mask_util.merge(mask_util.frPyObjects(seg, height, width))
    else:
        raise ValueError(f"{where}: segmentation must be an RLE dict or polygons, got {seg!r}")
    counts = seg["counts"]
    return {
        "size": [height, width],
        "counts": counts.decode() if isinstance(counts, bytes) else counts,
    }


def _track_frames(ann: Dict, video: Dict, json_file: str, category_map: Dict[int, int]):
    """{frame index: D2 annotation} of one YouTube-VIS annotation (object track)."""
    where = f"{json_file!r}, annotation id {ann.get('id', '?')} (video id {video['id']})"
    if not isinstance(ann.get("id"), int):
        raise ValueError(f"{where}: 'id' must be an int (it is the track id)")
    length, height, width = video["length"], video["height"], video["width"]
    for key in _PER_FRAME_KEYS:
        values = ann.get(key)
        if key != "segmentations" and values is None:
            continue
        if not isinstance(values, list):
            raise ValueError(f"{where}: '{key}' must be a list (one entry per frame)")
        if not values:
            raise ValueError(
                f"{where}: '{key}' is empty; it needs one entry (or null) for each of the "
                f"video's {length} frames"
            )
        if len(values) != length:
            raise ValueError(
                f"{where}: '{key}' has {len(values)} entries but the video has {length} frames"
            )
    if ann.get("category_id") not in category_map:
        raise ValueError(
            f"{where}: category_id {ann.get('category_id')!r} is not among the json's "
            f"categories {sorted(category_map)}"
        )
    bboxes = ann.get("bboxes") or [None] * length
    out = {}
    for t, (seg, box) in enumerate(zip(ann["segmentations"], bboxes)):
        if seg is None:
            if box is not None:
                raise ValueError(f"{where}: frame {t} has a bbox but no segmentation")
            continue
        rle = _frame_rle(seg, height, width, f"{where}, frame {t}")
        if mask_util.area(rle) == 0:
            continue
        if box is None:
            box = mask_util.toBbox(rle)
        out[t] = {
            "bbox": [float(v) for v in box],
            "bbox_mode": BoxMode.XYWH_ABS,
            "segmentation": rle,
            "category_id": category_map[ann["category_id"]],
            "iscrowd": int(ann.get("iscrowd", 0)),
            "track_id": ann["id"],
        }
    return out


def load_youtube_vis_clips(
    json_file: str, image_root: str, flow_root: Optional[str] = None
) -> List[Dict]:
    """Per-clip dicts (module doc) of a YouTube-VIS json; frame paths are ``image_root`` joined
    with ``file_names``, flow files ``flow_root`` joined with each frame's path stem + ``.npy``."""
    data = _read_json(json_file)
    categories = sorted(data.get("categories") or [], key=lambda c: c["id"])
    category_map = {c["id"]: i for i, c in enumerate(categories)}
    videos = {}
    for video in data["videos"]:
        _check_video(video, json_file)
        if video["id"] in videos:
            raise ValueError(f"{json_file!r}: video id {video['id']} appears twice")
        videos[video["id"]] = {**video, "length": len(video["file_names"])}
    tracks: Dict[int, List[Dict]] = {vid: [] for vid in videos}
    for ann in data.get("annotations") or []:
        if ann.get("video_id") not in videos:
            raise ValueError(
                f"{json_file!r}, annotation id {ann.get('id', '?')}: video_id "
                f"{ann.get('video_id')!r} is not a video of the json"
            )
        tracks[ann["video_id"]].append(
            _track_frames(ann, videos[ann["video_id"]], json_file, category_map)
        )
    clips, image_id = [], 0
    for vid, video in videos.items():
        names = video["file_names"]
        paths = [os.path.join(image_root, n) for n in names]
        frames = []
        for t, path in enumerate(paths):
            image_id += 1
            flow = None
            if flow_root is not None and t + 1 < len(names):
                flow = os.path.join(flow_root, os.path.splitext(names[t])[0] + ".npy")
            frames.append(
                {
                    "file_name": path,
                    "height": video["height"],
                    "width": video["width"],
                    "image_id": image_id,
                    "video_id": vid,
                    "frame_idx": t,
                    "length": len(names),
                    "video_frames": paths,
                    "flow_file": flow,
                    "annotations": [track[t] for track in tracks[vid] if t in track],
                }
            )
        clips.append(
            {
                "video_id": vid,
                "height": video["height"],
                "width": video["width"],
                "length": len(names),
                "file_names": paths,
                "frames": frames,
            }
        )
    return clips


def load_youtube_vis_json(
    json_file: str, image_root: str, flow_root: Optional[str] = None
) -> List[Dict]:
    """Per-frame D2 dicts (module doc) of all videos of a YouTube-VIS json, videos in json order."""
    clips = load_youtube_vis_clips(json_file, image_root, flow_root)
    return [frame for clip in clips for frame in clip["frames"]]


def youtube_vis_metadata(
    categories: Sequence[Dict],
    json_file: str,
    image_root: str,
    flow_root: Optional[str] = None,
    clips: bool = False,
    frame_dataset: Optional[str] = None,
) -> Dict:
    """D2 metadata of a YouTube-VIS dataset: COCO-style class names and id map (categories
    sorted by id), the files, and the evaluator type (per-clip: video AP; per-frame: COCO).

    ``frame_dataset`` (per-clip only): the name of the per-frame dataset of the same files; the
    video evaluation adds that dataset's COCO AP of the frames as the video model predicted them
    (``d2ext.evaluation.build``)."""
    from .datasets import coco_instances_metadata

    meta = {
        **coco_instances_metadata(categories),
        "youtube_vis_json": json_file,
        "image_root": image_root,
        "flow_root": flow_root,
        "evaluator_type": "youtube_vis" if clips else "coco",
    }
    if clips and frame_dataset:
        meta["frame_dataset"] = frame_dataset
    return meta


def _register(name: str, json_file: str, image_root: str, flow_root: Optional[str], clips: bool):
    from .datasets import _read_categories, _require

    what = f"dataset {name!r} ({'youtube_vis_clips' if clips else 'youtube_vis'})"
    _require(json_file, f"{what} annotation json")
    _require(image_root, f"{what} image root", is_dir=True)
    if flow_root is not None:
        _require(flow_root, f"{what} flow root", is_dir=True)
    # the pairing of DATASETS.REGISTER (and of the synthetic builtins): "<x>_clips" and "<x>"
    frame_dataset = name[: -len("_clips")] if clips and name.endswith("_clips") else None
    meta = youtube_vis_metadata(
        _read_categories(json_file, what), json_file, image_root, flow_root, clips, frame_dataset
    )
    load = load_youtube_vis_clips if clips else load_youtube_vis_json
    DatasetCatalog.register(name, functools.partial(load, json_file, image_root, flow_root))
    MetadataCatalog.get(name).set(**meta)


def register_youtube_vis(
    name: str, json_file: str, image_root: str, flow_root: Optional[str] = None
) -> None:
    """``youtube_vis``: per-frame dicts of a YouTube-VIS json + its ``JPEGImages`` folder,
    optionally a folder of ``<video>/<frame>.npy`` flows (as the synthetic videos write)."""
    _register(name, json_file, image_root, flow_root, clips=False)


def register_youtube_vis_clips(
    name: str, json_file: str, image_root: str, flow_root: Optional[str] = None
) -> None:
    """``youtube_vis_clips``: the per-clip dicts of the same files (video AP evaluation). A name
    ``<x>_clips`` pairs with the per-frame dataset ``<x>`` (metadata ``frame_dataset``): when
    ``<x>`` is registered too, video evaluation adds the frames' COCO AP."""
    _register(name, json_file, image_root, flow_root, clips=True)


def _uncompressed_rles(masks: List[np.ndarray]) -> List[Dict]:
    """Uncompressed COCO RLEs (``counts`` a list of ints, as the official files) of masks."""
    if not masks:
        return []
    counts, lengths = rle_run_lengths(torch.from_numpy(np.stack(masks).astype(bool)))
    height, width = masks[0].shape
    return [
        {"counts": c.tolist(), "size": [height, width]}
        for c in torch.split(counts, lengths.tolist())
    ]


def youtube_vis_annotation(
    ann_id: int,
    video_id: int,
    category_id: int,
    masks: Sequence[Optional[np.ndarray]],
    iscrowd: int = 0,
) -> Dict:
    """A YouTube-VIS annotation of one object track from its per-frame (H, W) bool masks (None
    or an empty mask where the object is absent): uncompressed RLE ``segmentations``, integer
    XYWH ``bboxes`` (tight around the mask) and ``areas``, None where absent."""
    present = [t for t, m in enumerate(masks) if m is not None and m.any()]
    rles = dict(zip(present, _uncompressed_rles([masks[t] for t in present])))
    bboxes: List[Optional[List[int]]] = [None] * len(masks)
    areas: List[Optional[int]] = [None] * len(masks)
    for t in present:
        rows, cols = np.flatnonzero(masks[t].any(1)), np.flatnonzero(masks[t].any(0))
        bboxes[t] = [
            int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)
        ]  # fmt: skip
        areas[t] = int(masks[t].sum())
    segmentations = [rles.get(t) for t in range(len(masks))]
    return {
        "id": int(ann_id),
        "video_id": int(video_id),
        "category_id": int(category_id),
        "iscrowd": int(iscrowd),
        "segmentations": segmentations,
        "bboxes": bboxes,
        "areas": areas,
    }


def write_youtube_vis_json(
    json_file: str,
    videos: List[Dict],
    annotations: List[Dict],
    categories: List[Dict],
    info: Optional[Dict] = None,
) -> None:
    """Write a YouTube-VIS json: ``videos`` ({id, width, height, length, file_names}),
    ``annotations`` (:func:`youtube_vis_annotation`), ``categories`` ({id, name, ...})."""
    data = {"info": info or {}, "videos": videos, "annotations": annotations}
    data["categories"] = categories
    with open(json_file, "w") as f:
        json.dump(data, f)
