"""YouTube-VIS video instance segmentation AP as a D2 ``DatasetEvaluator``
(``evaluator_type: "youtube_vis"``), following the official ``ytvoseval.py`` of the
youtube-vis fork of cocoapi.

The official evaluator is pycocotools' ``COCOeval`` with videos in place of images and one
change, its ``computeIoU``: the IoU of a predicted track d and a ground-truth track g is the
spatio-temporal mask IoU over the whole video, ``sum_f |d_f & g_f| / sum_f |d_f | g_f|``,
where a frame in which both are absent adds nothing and a frame in which one is absent adds the
other's area to the union (:func:`video_mask_iou`). Everything else is COCO's and is inherited
here from ``COCOeval`` itself (:class:`_VideoCOCOeval`): per video and category, tracks sorted
by score (stable) and cut to 100; greedy matching at IoU 0.50:0.05:0.95; crowd tracks are
ignored and may absorb several predictions (with the plain video IoU: the official does not use
COCO's intersection-over-prediction for crowds); 101-point interpolated precision; AR@1/10 per
video and category. Two official details differ from COCO images: a track's area is the mean of
its non-empty frames' areas (frames with no mask or a zero area are left out), and the area
ranges are 128^2 and 256^2 px, not 32^2 and 96^2 (:data:`AREA_RANGES`, bounds inclusive).

Ground truth: the per-clip dataset dicts (``video_id``, ``length``, ``height``, ``width``,
``frames``: per-frame dicts whose ``annotations`` carry ``segmentation`` (RLE, uncompressed RLE or
polygons), contiguous ``category_id``, ``iscrowd``, ``track_id``); a track is the annotations
sharing a ``track_id``. A frame's area is its annotation's ``"area"`` when present (the official
reads the json's ``areas``), else its mask's pixel count.

Predictions: per clip ``{"tracks": [{"score", "category_id" (contiguous), "segmentations": list
of ``length`` RLE dicts or None}]}``; :func:`instances_to_tracks` builds them from per-frame
``Instances``. Only the processed videos are evaluated (as D2's ``COCOEvaluator`` restricts to
the processed images). Undefined metrics (no ground truth in range) are NaN, as in D2.
"""

import contextlib
import io
import itertools
import json
import logging
import math
import os
from collections import OrderedDict, defaultdict
from typing import Dict, List, Optional, Sequence

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.structures import Instances
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager
from detectron2.utils.logger import create_small_table
from pycocotools.cocoeval import COCOeval

from .rle import encode_masks

__all__ = ["AREA_RANGES", "VideoAPEvaluator", "instances_to_tracks", "video_mask_iou"]

logger = logging.getLogger(__name__)

# ytvoseval's Params.areaRng: all / small / medium / large on a track's mean area (px)
AREA_RANGES = ((0, 1e5**2), (0, 128**2), (128**2, 256**2), (256**2, 1e5**2))
# COCOeval.stats index -> our key (stats 8-11, AR@100 and AR by area, are not reported)
STATS = {"AP": 0, "AP50": 1, "AP75": 2, "APs": 3, "APm": 4, "APl": 5, "AR1": 6, "AR10": 7}


def _frame_rle(segm, height: int, width: int, where: str) -> Optional[dict]:
    """A compressed RLE of one frame's segmentation, or None where the track is absent (None or
    an empty value, as the official's ``if seg``); polygons and uncompressed RLE are converted
    as the official's ``annToRLE``."""
    if not segm:
        return None
    if isinstance(segm, list):
        rle = mask_util.merge(mask_util.frPyObjects(segm, height, width))
    elif isinstance(segm, dict) and "counts" in segm and "size" in segm:
        rle = (
            mask_util.frPyObjects(segm, height, width) if isinstance(segm["counts"], list) else segm
        )
    else:
        raise ValueError(f"{where}: a segmentation must be an RLE dict, polygons or None")
    if list(rle["size"]) != [height, width]:
        raise ValueError(f"{where}: mask size {list(rle['size'])} != video size {[height, width]}")
    return rle


def _mean_area(areas: Sequence[Optional[float]]) -> float:
    """The official's track area: the mean of the frames' non-zero areas, 0 when there are none."""
    present = [a for a in areas if a]
    return float(np.mean(present)) if present else 0.0


def _json_rle(rle: Optional[dict]) -> Optional[dict]:
    if rle is None:
        return None
    counts = rle["counts"]
    return {
        "size": list(rle["size"]),
        "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
    }


def _clip_tracks(clip: dict, dataset_name: str) -> List[dict]:
    """The ground-truth tracks of one per-clip dict, in order of first appearance: the
    annotations sharing a ``track_id``, as dicts with ``category_id``, ``iscrowd``, ``ignore``
    (= iscrowd, as the official), ``area`` (:func:`_mean_area`) and ``segmentations`` (a list
    over the frames of a compressed RLE or None)."""
    video, length = clip["video_id"], clip["length"]
    prefix = f"dataset {dataset_name!r}, video_id={video!r}"
    if len(clip["frames"]) != length:
        raise ValueError(f"{prefix}: {len(clip['frames'])} frames for length {length}")
    tracks: Dict[object, dict] = {}
    for f, frame in enumerate(clip["frames"]):
        for j, ann in enumerate(frame.get("annotations", [])):
            where = f"{prefix}, frame {f}, annotation {j}"
            if "track_id" not in ann or "segmentation" not in ann:
                raise ValueError(f"{where}: a video annotation needs track_id and segmentation")
            key = (int(ann["category_id"]), int(ann.get("iscrowd", 0)))
            track = tracks.setdefault(
                ann["track_id"], {"key": key, "areas": [None] * length, "segms": [None] * length}
            )
            if track["key"] != key:
                raise ValueError(f"{where}: track {ann['track_id']!r} changes category or iscrowd")
            if track["segms"][f] is not None:
                raise ValueError(f"{where}: track {ann['track_id']!r} appears twice in the frame")
            rle = _frame_rle(ann["segmentation"], clip["height"], clip["width"], where)
            track["segms"][f] = rle
            if rle is not None:
                track["areas"][f] = ann.get("area", int(mask_util.area(rle)))
    return [
        {
            "category_id": t["key"][0],
            "iscrowd": t["key"][1],
            "ignore": t["key"][1],
            "area": _mean_area(t["areas"]),
            "segmentations": t["segms"],
        }
        for t in tracks.values()
    ]


def video_mask_iou(
    dt_tracks: Sequence[Sequence[Optional[dict]]], gt_tracks: Sequence[Sequence[Optional[dict]]]
) -> np.ndarray:
    """Spatio-temporal mask IoU of every predicted track with every ground-truth track.

    Args:
        dt_tracks, gt_tracks: D and G tracks, each a list over the video's frames of a compressed
            RLE or None (absent), all of the same length and frame size.

    Returns:
        (D, G) float64: ``sum_f I_f / sum_f U_f`` with ``I_f = |d_f & g_f|`` and
        ``U_f = |d_f| + |g_f| - I_f`` (an absent mask has area 0), 0 where the union is empty;
        the intersections and unions are exact integer pixel counts.
    """
    num_frames = {len(t) for t in itertools.chain(dt_tracks, gt_tracks)}
    if len(num_frames) > 1:
        raise ValueError(f"tracks of one video must have equal lengths, got {sorted(num_frames)}")

    def areas(tracks):
        return np.array(
            [sum(int(mask_util.area(m)) for m in t if m is not None) for t in tracks], np.int64
        )

    inter = np.zeros((len(dt_tracks), len(gt_tracks)), dtype=np.int64)
    for (i, d), (j, g) in itertools.product(enumerate(dt_tracks), enumerate(gt_tracks)):
        inter[i, j] = sum(
            int(mask_util.area(mask_util.merge([a, b], intersect=True)))
            for a, b in zip(d, g)
            if a is not None and b is not None
        )
    union = areas(dt_tracks)[:, None] + areas(gt_tracks)[None, :] - inter
    return np.divide(inter, union, out=np.zeros(inter.shape), where=union > 0)


class _VideoCOCOeval(COCOeval):
    """pycocotools' ``COCOeval`` on videos, as the official ``YTVOSeval`` (a copy of ``COCOeval``
    with a video ``computeIoU``): matching (``evaluateImg``), ``accumulate`` and ``summarize`` are
    inherited unchanged; a video id stands where COCO has an image id.

    Args:
        gts, dts: (video_id, category_id) -> track dicts with ``id`` (>= 1: 0 means "unmatched"
            in COCOeval's match arrays), ``area``, ``iscrowd``, ``ignore`` (gt), ``score`` (dt)
            and ``segmentations`` (a list of RLE or None).
    """

    def __init__(self, gts, dts, video_ids: Sequence, category_ids: Sequence[int]):
        super().__init__(iouType="segm")
        self.params.imgIds = list(video_ids)
        self.params.catIds = list(category_ids)
        self.params.areaRng = [list(r) for r in AREA_RANGES]
        self._video_gts, self._video_dts = gts, dts

    def _prepare(self):
        # COCOeval reads these from its COCO objects; the tracks are built already
        self._gts = defaultdict(list, self._video_gts)
        self._dts = defaultdict(list, self._video_dts)
        self.evalImgs = defaultdict(list)
        self.eval = {}

    def computeIoU(self, imgId, catId):
        gt, dt = self._gts[imgId, catId], self._dts[imgId, catId]
        if not gt and not dt:
            return []
        # the order and cut of COCOeval.evaluateImg, which indexes these rows
        order = np.argsort([-d["score"] for d in dt], kind="mergesort")[: self.params.maxDets[-1]]
        dt_segms = [dt[i]["segmentations"] for i in order]
        return video_mask_iou(dt_segms, [g["segmentations"] for g in gt])


def instances_to_tracks(frames: Sequence[Instances]) -> List[dict]:
    """Per-frame predictions of one video -> its tracks, in :class:`VideoAPEvaluator`'s format.

    A track is all the detections sharing a ``pred_track_ids`` value. As MaskTrack R-CNN's
    ``results2json_videoseg`` (which YouTube-VIS entries such as YolactEdge's follow), its score
    is the mean of its per-frame scores and its category the most frequent per-frame class, ties
    going to the lower class id (``np.bincount(...).argmax()``): a track is scored as a whole,
    and a class that flickers for a frame or two does not split it.

    Args:
        frames: one ``Instances`` per frame, in order, with ``pred_masks`` (N, H, W) bool (or
            0/1) in video pixels, ``scores`` (N,), ``pred_classes`` (N,) contiguous ids and
            ``pred_track_ids`` (N,) int, negative for untracked detections (the ``Tracker``'s
            -1 below its ``min_score``), which are left out; a frame without detections may
            have no fields.

    Returns:
        tracks sorted by track id: ``{"track_id", "score", "category_id", "segmentations": list
        over the frames of a compressed RLE or None}``.
    """
    found: Dict[int, dict] = {}
    size = None
    for f, inst in enumerate(frames):
        if not inst.get_fields() or len(inst) == 0:
            continue
        missing = [
            k for k in ("pred_masks", "scores", "pred_classes", "pred_track_ids") if not inst.has(k)
        ]
        if missing:
            raise ValueError(f"frame {f}: Instances without {', '.join(missing)}")
        masks = inst.pred_masks
        if tuple(masks.shape[1:]) != (size or tuple(masks.shape[1:])):
            raise ValueError(f"frame {f}: masks of size {tuple(masks.shape[1:])}, earlier {size}")
        size = tuple(masks.shape[1:])
        ids = torch.as_tensor(inst.pred_track_ids).tolist()
        tracked = [i for i in ids if i >= 0]
        if len(set(tracked)) != len(tracked):
            raise ValueError(f"frame {f}: a track id appears twice in pred_track_ids {ids}")
        scores = torch.as_tensor(inst.scores).tolist()
        classes = torch.as_tensor(inst.pred_classes).tolist()
        for tid, score, cls, rle in zip(ids, scores, classes, encode_masks(masks)):
            if tid < 0:
                continue
            if not math.isfinite(score):
                raise ValueError(f"frame {f}, track {tid}: score {score} is not finite")
            track = found.setdefault(tid, {"scores": [], "classes": [], "segms": {}})
            track["scores"].append(score)
            track["classes"].append(int(cls))
            track["segms"][f] = rle
    return [
        {
            "track_id": tid,
            "score": float(np.mean(t["scores"])),
            "category_id": int(np.bincount(t["classes"]).argmax()),
            "segmentations": [t["segms"].get(f) for f in range(len(frames))],
        }
        for tid, t in sorted(found.items())
    ]


class VideoAPEvaluator(DatasetEvaluator):
    """YouTube-VIS AP / AR of video instance tracks (see the module docstring).

    Args:
        dataset_name: a registered per-clip dataset (``synth_videos_val_clips``, a YouTube-VIS
            split's ``*_clips``); its metadata's ``thing_classes`` name the per-category AP and
            ``thing_dataset_id_to_contiguous_id`` maps the written results back to the json's ids.
        output_dir: receives ``youtube_vis_results.json`` in the official submission format
            (``results.json`` of the challenge server) when given.
        distributed: gather the predictions of all ranks; only the main process returns results.
    """

    def __init__(
        self, dataset_name: str, *, output_dir: Optional[str] = None, distributed: bool = True
    ):
        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._distributed = distributed
        self._metadata = MetadataCatalog.get(dataset_name)
        self._class_names = self._metadata.get("thing_classes", None)
        self._ground_truth = None
        self.reset()

    def reset(self):
        self._predictions = []

    def process(self, inputs, outputs):
        """Checks and stores per clip its ``video_id`` and tracks (RLEs compressed)."""
        num_classes = len(self._class_names) if self._class_names else None
        for inp, out in zip(inputs, outputs):
            video = inp["video_id"]
            missing = [k for k in ("length", "height", "width") if k not in inp]
            if missing:
                raise ValueError(f"video_id={video!r}: the per-clip input has no {missing}")
            length, height, width = inp["length"], inp["height"], inp["width"]
            if "tracks" not in out:
                raise ValueError(f"video_id={video!r}: the model output has no 'tracks'")
            tracks = []
            for k, track in enumerate(out["tracks"]):
                where = f"video_id={video!r}, track {k}"
                segms = track["segmentations"]
                if len(segms) != length:
                    raise ValueError(f"{where}: {len(segms)} segmentations for {length} frames")
                score, category = float(track["score"]), int(track["category_id"])
                if not math.isfinite(score):
                    raise ValueError(f"{where}: score {score} is not finite")
                if category < 0 or (num_classes and category >= num_classes):
                    raise ValueError(f"{where}: category_id {category} not in [0, {num_classes})")
                segms = [
                    _frame_rle(s, height, width, f"{where}, frame {f}") for f, s in enumerate(segms)
                ]
                tracks.append({"score": score, "category_id": category, "segmentations": segms})
            self._predictions.append({"video_id": video, "tracks": tracks})

    def evaluate(self):
        if self._distributed:
            comm.synchronize()
            predictions = list(itertools.chain(*comm.gather(self._predictions, dst=0)))
            if not comm.is_main_process():
                return {}
        else:
            predictions = self._predictions
        if len(predictions) == 0:
            logger.warning("[VideoAPEvaluator] Did not receive valid predictions.")
            return {}
        ground_truth = self._load_ground_truth()
        gts, dts, seen = defaultdict(list), defaultdict(list), set()
        next_id = itertools.count(1)  # unique over gt and dt; 0 is COCOeval's "unmatched"
        for pred in predictions:
            video = pred["video_id"]
            if video in seen:
                raise ValueError(f"video_id={video!r} was processed twice")
            if video not in ground_truth:
                raise KeyError(f"video_id={video!r} is not in dataset {self._dataset_name!r}")
            seen.add(video)
            for track in ground_truth[video]:
                gts[video, track["category_id"]].append({**track, "id": next(next_id)})
            for track in pred["tracks"]:
                areas = [
                    None if s is None else int(mask_util.area(s)) for s in track["segmentations"]
                ]
                dts[video, track["category_id"]].append(
                    {**track, "id": next(next_id), "area": _mean_area(areas), "iscrowd": 0}
                )
        self._write(predictions)
        return OrderedDict(segm_vis=self._summarize(gts, dts, sorted(seen)))

    def _load_ground_truth(self) -> Dict[object, List[dict]]:
        """video_id -> its ground-truth tracks (:func:`_clip_tracks`), loaded once."""
        if self._ground_truth is None:
            clips = DatasetCatalog.get(self._dataset_name)
            if len(clips) == 0:
                raise ValueError(f"dataset {self._dataset_name!r} is empty: nothing to evaluate")
            self._ground_truth = {c["video_id"]: _clip_tracks(c, self._dataset_name) for c in clips}
        return self._ground_truth

    # ------------------------------------------------------------------ results
    def _summarize(self, gts, dts, video_ids) -> Dict[str, float]:
        if self._class_names:
            category_ids = list(range(len(self._class_names)))
        else:
            category_ids = sorted({c for _, c in itertools.chain(gts, dts)})
        if not category_ids:  # no track anywhere: COCOeval needs one category to run
            category_ids = [0]
        coco_eval = _VideoCOCOeval(gts, dts, video_ids, category_ids)
        text = io.StringIO()
        with contextlib.redirect_stdout(text):
            coco_eval.evaluate()
            coco_eval.accumulate()
            text.truncate(0)
            text.seek(0)
            coco_eval.summarize()
        stats = coco_eval.stats
        res = OrderedDict(
            (k, float(stats[i] * 100) if stats[i] >= 0 else math.nan) for k, i in STATS.items()
        )
        logger.info(
            f"YouTube-VIS results on {self._dataset_name} ({len(video_ids)} videos):\n"
            + text.getvalue()
            + create_small_table(res)
        )
        if not all(math.isfinite(v) for v in res.values()):
            logger.info("Metrics without ground truth in their range are NaN.")
        if self._class_names and len(self._class_names) > 1:
            precision = coco_eval.eval["precision"]  # (iou, recall, category, area, max dets)
            for k, name in enumerate(self._class_names):
                p = precision[:, :, k, 0, -1]
                res[f"AP-{name}"] = float(p[p > -1].mean() * 100) if (p > -1).any() else math.nan
        return res

    def _write(self, predictions: List[dict]) -> None:
        """The tracks in the official results format: json category ids, RLE counts as str."""
        if not self._output_dir:
            return
        to_json = self._metadata.get("thing_dataset_id_to_contiguous_id", None)
        to_json = {v: k for k, v in to_json.items()} if to_json else None
        rows = [
            {
                "video_id": pred["video_id"],
                "score": t["score"],
                "category_id": to_json[t["category_id"]] if to_json else t["category_id"],
                "segmentations": [_json_rle(s) for s in t["segmentations"]],
            }
            for pred in predictions
            for t in pred["tracks"]
        ]
        PathManager.mkdirs(self._output_dir)
        path = os.path.join(self._output_dir, "youtube_vis_results.json")
        with PathManager.open(path, "w") as f:
            json.dump(rows, f)
        logger.info(f"[VideoAPEvaluator] {len(rows)} tracks written to {path}")
