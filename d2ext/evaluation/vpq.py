"""Video Panoptic Quality (VPQ, Kim et al., CVPR 2020) as the official ``tools/eval_vpq.py`` of
mcahny/vps computes it, on :mod:`.panoptic_quality`'s PQ statistics.

The official rules, all kept:

* a video's annotated frames (Cityscapes-VPS: every 5th raw frame, 6 per video) are cut into
  windows of 1, 2, 3, 4 consecutive annotated frames, sliding by one frame, never across
  videos; ``k`` = 0, 5, 10, 15 is the window's span in raw frames (:data:`WINDOW_SIZES`);
* in a window a tube is every pixel with one segment id; its category (and ``iscrowd``) is
  that of its first frame; gt tube areas are the sums of the json ``area`` fields (ids listed
  twice in one frame add up), predicted areas are counted in the PNGs;
* tubes are matched by panopticapi's rules (:func:`panoptic_image_matches` on the window's
  frames stacked into one id map): IoU > 0.5 at equal category, the union without the
  prediction's overlap with VOID (id 0), crowd gt never matched nor a FN, an unmatched
  prediction no FP when more than half of it lies on VOID plus its category's crowd tube;
* IoU sums and TP/FP/FN are summed per category over all windows of all videos
  (:class:`PQStatFast`); VPQ at k is the mean PQ over the categories with TP + FP + FN > 0,
  All / Things / Stuff; the final VPQ is the mean over the four k. Values are in percent.

**ID switches** (not in the official script): per video, each non-crowd gt *thing* segment id
is followed over the annotated frames in which it is matched (k = 0, single-frame matching);
each time it is matched to a predicted id other than the one it was last matched to (a frame
in between without a match does not reset it) counts one switch (CLEAR-MOT's IDSW).

The official script's assumptions about its files are checked rather than silently departed
from (:func:`gt_videos`): it cuts the json's image list into chunks of exactly 6 frames, one per
video; it reads the gt PNGs in sorted file-name order and the json annotations, prediction PNGs
(``pan_pred/<image id>.png``) and ``pred.json`` annotations in the image order, pairing all by
position. Here frames are grouped into videos by the video id of the image id
(``VVVV_FFFF_<city>_<seq>_<frame>``, or an image's ``video_id``) and paired by image id; where
the official pairing or chunking would differ a ``ValueError`` names the file, video and image.
``frames_per_video=None`` lifts the fixed length (videos of any length, windows within each)
and ``check_official_order=False`` the order checks; the numbers are then VPQ by the same rules,
which the official script cannot compute on such files.

Differences, on inputs the official cannot score: a group without any category to average gives
NaN where it raises ZeroDivisionError; errors are exceptions naming the image, not ``pdb``.
"""

import json
import logging
import os
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from d2ext.data.cityscapes_vps import gt_png_name, video_id_of

from .panoptic_png import read_panoptic_png
from .panoptic_quality import PQStatFast, panoptic_image_matches

__all__ = [
    "WINDOW_SIZES",
    "VideoFrame",
    "VPQStat",
    "gt_file_name",
    "gt_videos",
    "vpq_compute",
]

logger = logging.getLogger(__name__)

# k (the window's span in raw frames, 5 between annotated frames) -> annotated frames per window
WINDOW_SIZES = {0: 1, 5: 2, 10: 3, 15: 4}
# the official eval_vpq.py's ``nframes_per_video``
OFFICIAL_FRAMES_PER_VIDEO = 6
GROUPS = ("All", "Things", "Stuff")


class VideoFrame(NamedTuple):
    """One annotated frame of a video with its prediction."""

    image_id: object
    gt: np.ndarray  # (H, W) int gt segment ids, 0 = VOID
    gt_segments: List[dict]  # json segments_info: id, category_id, iscrowd, area
    pred: np.ndarray  # (H, W) int predicted segment ids (track ids for things), 0 = unlabelled
    pred_segments: List[dict]  # id, category_id (the gt json's category ids)


def _merge_segments(frames: Sequence[Sequence[dict]], where: str, sum_area: bool) -> List[dict]:
    """The segments of a tube window: per id the first occurrence's fields, the areas of all
    occurrences summed when ``sum_area`` (the official's gt handling, also for an id listed
    twice in one frame)."""
    merged: Dict[int, dict] = {}
    for segments in frames:
        for s in segments:
            if "id" not in s or "category_id" not in s:
                raise KeyError(f"{where}: a segment needs 'id' and 'category_id', got {s}")
            sid = int(s["id"])
            if sum_area and "area" not in s:
                raise KeyError(f"{where}: gt segment {sid} has no 'area'")
            if sid not in merged:
                merged[sid] = dict(s)
            elif sum_area:
                merged[sid]["area"] += s["area"]
    return list(merged.values())


class VPQStat:
    """Per-k PQ statistics (:class:`PQStatFast`) over the windows of videos, and ID switches.

    Args:
        categories: {category id: category dict with "isthing"}, as the gt json's.
    """

    def __init__(self, categories: Dict[int, dict]):
        self.categories = categories
        self.stats = {k: PQStatFast(categories) for k in WINDOW_SIZES}
        self.id_switches = 0
        self.num_videos = 0

    def add_video(self, frames: Sequence[VideoFrame], video_id=None) -> "VPQStat":
        """Add every window of one video (its annotated frames in order)."""
        for f in frames:
            gt_size, pred_size = np.shape(f.gt), np.shape(f.pred)
            if gt_size != pred_size or gt_size != np.shape(frames[0].gt):
                raise ValueError(
                    f"video {video_id!r}, image_id={f.image_id}: gt {gt_size} and predicted "
                    f"{pred_size} id maps must have one size, that of the video's first frame "
                    f"{np.shape(frames[0].gt)}"
                )
        gt_segments = [
            _merge_segments([f.gt_segments], f"image_id={f.image_id} (gt)", True) for f in frames
        ]
        pred_segments = [
            _merge_segments([f.pred_segments], f"image_id={f.image_id} (pred)", False)
            for f in frames
        ]
        frame_matches = []
        for k, n in WINDOW_SIZES.items():  # k = 0 first: it checks every frame on its own
            for start in range(len(frames) - n + 1):
                window = frames[start : start + n]
                if n == 1:
                    gt, pred, image_id = window[0].gt, window[0].pred, window[0].image_id
                else:
                    gt = np.concatenate([f.gt for f in window])
                    pred = np.concatenate([f.pred for f in window])
                    image_id = f"{window[0].image_id}..{window[-1].image_id} (video {video_id})"
                where = f"image_id={image_id}"
                matches = panoptic_image_matches(
                    gt,
                    _merge_segments(gt_segments[start : start + n], where, True),
                    pred,
                    _merge_segments(pred_segments[start : start + n], where, False),
                    self.categories,
                    image_id,
                )
                self.stats[k].add(matches.stats)
                if n == 1:
                    frame_matches.append(matches)
        self.id_switches += self._count_id_switches(gt_segments, frame_matches)
        self.num_videos += 1
        return self

    def _count_id_switches(self, gt_segments, frame_matches) -> int:
        """ID switches of one video (module doc)."""
        switches, last = 0, {}
        for segments, matches in zip(gt_segments, frame_matches):
            category = {int(s["id"]): s["category_id"] for s in segments}
            for g, p in zip(matches.gt_id.tolist(), matches.pred_id.tolist()):
                if self.categories[category[g]].get("isthing", 0) != 1:
                    continue
                if g in last and last[g] != p:
                    switches += 1
                last[g] = p
        return switches

    def pq_results(self) -> Dict[int, Dict]:
        """{k: :meth:`PQStatFast.results`} (PQ/SQ/RQ as fractions, per class)."""
        return {k: stat.results() for k, stat in self.stats.items()}

    def results(self) -> Dict:
        """``{0: {"All", "Things", "Stuff"}, 5: ..., 10: ..., 15: ..., "final": {...}}``, VPQ in
        percent, the dict eval_vpq.py returns (ID switches: :attr:`id_switches`)."""
        out: Dict = {}
        for k, res in self.pq_results().items():
            out[k] = {name: 100 * res[name]["pq"] for name in GROUPS}
        ks = list(WINDOW_SIZES)
        out["final"] = {name: sum(out[k][name] for k in ks) / len(ks) for name in GROUPS}
        return out

    def write_txt(self, output_dir: str) -> None:
        """The official's ``vpq-<k>.txt`` tables and ``vpq-final.txt`` in ``output_dir``."""
        os.makedirs(output_dir, exist_ok=True)
        for k, res in self.pq_results().items():
            per_category = self.stats[k].per_category()
            # the official's header pads "N\n" (not "N") to 5 characters
            header = "{:10s}| {:>5s}  {:>5s}  {:>5s} {:>5s}".format("", "PQ", "SQ", "RQ", "N\n")
            lines = ["=" * 48, header + "-" * 38]
            for name in GROUPS:
                r = res[name]
                lines.append(
                    f"{name:10s}| {100 * r['pq']:5.1f}  {100 * r['sq']:5.1f}  "
                    f"{100 * r['rq']:5.1f} {r['n']:5d}"
                )
            lines.append(
                "{:4s}| {:>5s} {:>5s} {:>5s} {:>6s} {:>7s} {:>7s} {:>7s}".format(
                    "IDX", "PQ", "SQ", "RQ", "IoU", "TP", "FP", "FN"
                )
            )
            for c, r in res["per_class"].items():
                s = per_category.get(int(c), {"iou": 0.0, "tp": 0, "fp": 0, "fn": 0})
                lines.append(
                    f"{int(c):4d} | {100 * r['pq']:5.1f} {100 * r['sq']:5.1f} {100 * r['rq']:5.1f} "
                    f"{s['iou']:6.1f} {s['tp']:7d} {s['fp']:7d} {s['fn']:7d}"
                )
            with open(os.path.join(output_dir, f"vpq-{k}.txt"), "w") as f:
                f.write("\n".join(lines) + "\n")
        final = self.results()["final"]
        with open(os.path.join(output_dir, "vpq-final.txt"), "w") as f:
            f.write(
                f"vpq_all:{final['All']:.4f}\nvpq_thing:{final['Things']:.4f}\n"
                f"vpq_stuff:{final['Stuff']:.4f}\n"
            )


def gt_file_name(image: dict, annotation: dict) -> str:
    """The gt PNG of an image: its annotation's ``file_name``, else the official renaming."""
    return annotation.get("file_name") or gt_png_name(image["file_name"])


def gt_videos(
    gt_json: dict,
    json_file: str,
    *,
    frames_per_video: Optional[int] = OFFICIAL_FRAMES_PER_VIDEO,
    check_official_order: bool = True,
) -> List[Tuple[object, List[Tuple[dict, dict]]]]:
    """The videos of a Cityscapes-VPS panoptic gt json: ``[(video id, [(image, annotation),
    ...])]``, videos and frames in the json's image order; raises where the official
    script's chunking or positional pairing (module doc) would differ from this grouping."""
    images, annotations = gt_json.get("images"), gt_json.get("annotations")
    if not isinstance(images, list) or not isinstance(annotations, list):
        raise ValueError(f"{json_file}: a panoptic gt json needs 'images' and 'annotations' lists")
    by_image: Dict[object, dict] = {}
    for i, ann in enumerate(annotations):
        if "image_id" not in ann or "segments_info" not in ann:
            raise ValueError(f"{json_file}: annotations[{i}] needs 'image_id' and 'segments_info'")
        if ann["image_id"] in by_image:
            raise ValueError(f"{json_file}: two annotations for image {ann['image_id']!r}")
        by_image[ann["image_id"]] = ann
    ids = [im.get("id") for im in images]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{json_file}: an image id appears twice in 'images'")
    missing = [i for i in ids if i not in by_image]
    extra = sorted(set(by_image) - set(ids), key=str)
    if missing or extra:
        raise ValueError(
            f"{json_file}: images without an annotation {missing[:5]}, annotations of unknown "
            f"images {extra[:5]}"
        )
    if check_official_order:
        names = [gt_png_name(im.get("file_name", "")) for im in images]
        for i, (im, ann, name, ordered) in enumerate(
            zip(images, annotations, names, sorted(names))
        ):
            why = None
            if ann["image_id"] != im["id"]:
                why = f"annotations[{i}] is for image {ann['image_id']!r}"
            elif name != ordered:
                why = f"the {i}-th gt PNG in sorted name order is {ordered!r}, not {name!r}"
            elif ann.get("file_name", name) != name:
                why = f"it reads {name!r} where the annotation names {ann['file_name']!r}"
            if why:
                raise ValueError(
                    f"{json_file}: the official eval_vpq.py pairs images[{i}] ({im['id']!r}) "
                    f"with the wrong ground truth: {why}; reorder the json, or pass "
                    f"check_official_order=False to pair by image id"
                )
    videos: Dict[object, List[Tuple[dict, dict]]] = {}
    previous = None
    for im in images:
        video = video_id_of(im, json_file)
        if video != previous and video in videos and frames_per_video is not None:
            raise ValueError(
                f"{json_file}: the frames of video {video!r} are not consecutive in 'images' "
                f"(image {im['id']!r}); the official eval_vpq.py cuts the image list into "
                f"consecutive chunks of {frames_per_video} frames"
            )
        videos.setdefault(video, []).append((im, by_image[im["id"]]))
        previous = video
    if frames_per_video is not None:
        for video, frames in videos.items():
            if len(frames) != frames_per_video:
                raise ValueError(
                    f"{json_file}: video {video!r} has {len(frames)} annotated frames; the "
                    f"official eval_vpq.py assumes exactly {frames_per_video} per video (it cuts "
                    f"the image list into chunks of that size); pass frames_per_video=None to "
                    f"group frames by video id instead"
                )
    return list(videos.items())


def _read_json(path: str, what: str) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)
    except OSError as e:
        raise FileNotFoundError(f"cannot read the {what} {path}: {e}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"the {what} {path} is not valid json ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"the {what} {path} holds a {type(data).__name__}, not a json object")
    return data


def _pred_annotations(pred_json: dict, json_file: str, images: List[dict], check_order: bool):
    """{image id: pred.json annotation}, by ``image_id``, or by position when no annotation has
    one (the official never reads it)."""
    annotations = pred_json.get("annotations")
    if not isinstance(annotations, list):
        raise ValueError(f"{json_file}: a prediction json needs an 'annotations' list")
    if len(annotations) != len(images):
        raise ValueError(
            f"{json_file}: {len(annotations)} annotations for the {len(images)} images of the gt "
            f"json (the official eval_vpq.py pairs them by position)"
        )
    with_id = sum("image_id" in a for a in annotations)
    if with_id == 0:
        return {im["id"]: ann for im, ann in zip(images, annotations)}
    if with_id != len(annotations):
        raise ValueError(f"{json_file}: some annotations have an 'image_id', others not")
    by_image = {}
    for i, (im, ann) in enumerate(zip(images, annotations)):
        if ann["image_id"] in by_image:
            raise ValueError(f"{json_file}: two annotations for image {ann['image_id']!r}")
        by_image[ann["image_id"]] = ann
        if check_order and ann["image_id"] != im["id"]:
            raise ValueError(
                f"{json_file}: annotations[{i}] is for image {ann['image_id']!r} but the gt "
                f"json's images[{i}] is {im['id']!r}; the official eval_vpq.py pairs them by "
                f"position; reorder it, or pass check_official_order=False to pair by image id"
            )
    missing = [im["id"] for im in images if im["id"] not in by_image]
    if missing:
        raise ValueError(f"{json_file}: no prediction for images {missing[:5]}")
    return by_image


def vpq_compute(
    submit_dir: str,
    truth_dir: str,
    pan_gt_json_file: str,
    *,
    output_dir: Optional[str] = None,
    frames_per_video: Optional[int] = OFFICIAL_FRAMES_PER_VIDEO,
    check_official_order: bool = True,
    return_stats: bool = False,
):
    """VPQ of a Cityscapes-VPS submission, as ``tools/eval_vpq.py --submit_dir --truth_dir
    --pan_gt_json_file`` (module doc).

    Args:
        submit_dir: holds ``pred.json`` (``{"annotations": [{"image_id", "segments_info"}]}``,
            one per gt image) and ``pan_pred/<image id>.png`` (RGB, id = R + 256 G + 256^2 B).
        truth_dir: the gt PNGs (``<split>/panoptic_video``).
        pan_gt_json_file: the gt json (``panoptic_gt_<split>_city_vps.json``).
        output_dir: where to write the official's ``vpq-<k>.txt`` and ``vpq-final.txt`` (the
            official writes them into ``submit_dir``); None writes nothing.
        frames_per_video: annotated frames every video must have (the official's 6); None
            allows any number.
        check_official_order: raise where the official positional pairing differs.
        return_stats: also return the :class:`VPQStat` (per-k, per-category counts and
            ``id_switches``).

    Returns:
        ``{0: {"All", "Things", "Stuff"}, 5: ..., 10: ..., 15: ..., "final": ...}``, VPQ in
        percent as eval_vpq.py returns it; with ``return_stats`` a tuple (that, :class:`VPQStat`).
    """
    gt_json = _read_json(pan_gt_json_file, "gt json")
    pred_json_file = os.path.join(submit_dir, "pred.json")
    pred_json = _read_json(pred_json_file, "prediction json")
    categories = {c["id"]: c for c in gt_json.get("categories") or []}
    if not categories:
        raise ValueError(f"{pan_gt_json_file}: no 'categories'")
    videos = gt_videos(
        gt_json,
        pan_gt_json_file,
        frames_per_video=frames_per_video,
        check_official_order=check_official_order,
    )
    preds = _pred_annotations(pred_json, pred_json_file, gt_json["images"], check_official_order)
    stat = VPQStat(categories)
    for video, frames in videos:
        video_frames = []
        for image, ann in frames:
            gt_file = gt_file_name(image, ann)
            pred_ann = preds[image["id"]]
            if "segments_info" not in pred_ann:
                raise KeyError(f"{pred_json_file}: image {image['id']!r} has no 'segments_info'")
            video_frames.append(
                VideoFrame(
                    image["id"],
                    read_panoptic_png(os.path.join(truth_dir, gt_file)),
                    ann["segments_info"],
                    read_panoptic_png(os.path.join(submit_dir, "pan_pred", f"{image['id']}.png")),
                    pred_ann["segments_info"],
                )
            )
        stat.add_video(video_frames, video)
    results = stat.results()
    if output_dir is not None:
        stat.write_txt(output_dir)
    logger.info(
        "VPQ over %d videos: All %.3f, Things %.3f, Stuff %.3f; %d ID switches",
        stat.num_videos,
        results["final"]["All"],
        results["final"]["Things"],
        results["final"]["Stuff"],
        stat.id_switches,
    )
    return (results, stat) if return_stats else results
