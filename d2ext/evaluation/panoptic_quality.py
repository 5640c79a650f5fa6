"""Panoptic Quality with O(HW) matching: a drop-in for panopticapi's ``pq_compute``.

panopticapi (``panopticapi/evaluation.py``) finds segment overlaps with a sort-based
``np.unique`` over ``gt_id * 2**24 + pred_id`` per image. Here the ids are first mapped to small
slots through a lookup table built from ``segments_info`` and the overlaps are one
``np.bincount``; the matching then runs on the (gt segments x pred segments) overlap matrix.
The rules are panopticapi's, to the letter:

* id 0 is VOID; a segment id of a PNG must be in its ``segments_info`` (gt ids that are not are
  ignored, pred ids raise); every predicted segment must appear in its PNG;
* the gt area is the json ``area``, the predicted area is counted in the PNG;
* a (gt, pred) pair of one category, gt not crowd, matches when
  ``I / (A_pred + A_gt - I - I(VOID, pred)) > 0.5``;
* an unmatched non-crowd gt is a FN; an unmatched prediction is a FP unless more than half of
  it lies on VOID plus the crowd region of its category (the *last* crowd segment of that
  category in ``segments_info``, as panopticapi's dict keeps it).

:func:`panoptic_image_stats` and :class:`PQStatFast` work on id maps in memory (a model's
output, a video frame); only :func:`pq_compute_fast` reads PNG files, through
:func:`d2ext.evaluation.panoptic_png.read_panoptic_png`.

Differences, both on inputs panopticapi cannot score: a group (All/Things/Stuff) with no
category to average gives NaN where panopticapi raises ZeroDivisionError, and errors are
``KeyError``/``ValueError`` naming the image and segment.
"""

import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Iterable, List, NamedTuple, Optional

import numpy as np
import torch

from d2ext.layers import eval_ops_compiled, id_pair_counts

__all__ = [
    "OFFSET",
    "VOID",
    "PanopticImageMatches",
    "PanopticImageStats",
    "PQStatFast",
    "panoptic_image_matches",
    "panoptic_image_stats",
    "pq_compute_fast",
]

logger = logging.getLogger(__name__)

OFFSET = 256 * 256 * 256  # ids are 24-bit RGB colours (panopticapi.utils.rgb2id)
VOID = 0


class PanopticImageStats(NamedTuple):
    """PQ counts of one image, for the categories it touches."""

    category_id: np.ndarray  # (M,) int64, sorted unique category ids
    iou: np.ndarray  # (M,) float64, sum of the IoUs of the matched pairs
    tp: np.ndarray  # (M,) int64
    fp: np.ndarray  # (M,) int64
    fn: np.ndarray  # (M,) int64


class PanopticImageMatches(NamedTuple):
    """PQ counts of one image and the matched segment pairs behind its TPs."""

    stats: PanopticImageStats
    gt_id: np.ndarray  # (K,) int64, the matched gt segment ids
    pred_id: np.ndarray  # (K,) int64, the predicted segment id matched to each


def _segments_by_id(segments: Iterable[dict], image_id, what: str) -> Dict[int, dict]:
    out = {}
    for s in segments:  # later duplicates win, as panopticapi's dict comprehension
        sid = int(s["id"])
        if not 0 < sid < OFFSET:
            raise ValueError(
                f"image_id={image_id}: {what} segment id {sid} is outside [1, {OFFSET}) "
                f"(0 is VOID, ids are 24-bit RGB colours)"
            )
        out[sid] = s
    return out


def _slots(
    id_map: np.ndarray, seg_ids: np.ndarray, image_id, what: str, scale: int = 1
) -> np.ndarray:
    """Map ids to ``scale`` * slot: 0 = id not in segments_info, 1 = VOID, 2 + i = seg_ids[i]."""
    lo, hi = (int(id_map.min()), int(id_map.max())) if id_map.size else (0, 0)
    if lo < 0 or hi >= OFFSET:
        raise ValueError(
            f"image_id={image_id}: {what} id map has ids in [{lo}, {hi}], outside [0, {OFFSET})"
        )
    size = max(hi, int(seg_ids.max()) if seg_ids.size else 0) + 1
    lut = np.zeros(size, dtype=np.int32)  # calloc'd: only the pages touched cost anything
    lut[VOID] = scale
    lut[seg_ids] = np.arange(2, seg_ids.size + 2, dtype=np.int32) * scale
    return lut[id_map]


def _id_slots(ids: np.ndarray, seg_ids: np.ndarray) -> np.ndarray:
    """Slots of a few ids: 0 = not in seg_ids, 1 = VOID, 2 + i = seg_ids[i]."""
    slots = np.zeros(ids.shape, dtype=np.int64)
    if seg_ids.size:
        order = np.argsort(seg_ids, kind="stable")
        sorted_ids = seg_ids[order]
        pos = np.minimum(np.searchsorted(sorted_ids, ids), sorted_ids.size - 1)
        found = sorted_ids[pos] == ids
        slots[found] = order[pos[found]] + 2
    slots[ids == VOID] = 1
    return slots


def _overlaps(gt_id_map, gt_ids, pred_id_map, pred_ids, image_id):
    """(counts, unknown): counts[i, j] = pixels of gt slot i and pred slot j (slots as
    :func:`_slots`), unknown = the sorted predicted ids of slot 0 (not in segments_info).

    With the compiled op, one pass of :func:`d2ext.layers.id_pair_counts` over both maps
    (panopticapi's ``np.unique(gt * OFFSET + pred)`` without the sort); else id lookup tables and
    a bincount, faster than that op's ``np.unique`` reference.
    """
    n_gt, n_pred = gt_ids.size + 2, pred_ids.size + 2
    if eval_ops_compiled() and gt_id_map.dtype.kind in "iu" and pred_id_map.dtype.kind in "iu":
        g, p = gt_id_map, pred_id_map
        if not (g.dtype == p.dtype and g.dtype in (np.int32, np.int64)):
            g, p = g.astype(np.int64), p.astype(np.int64)
        g, p = torch.from_numpy(np.ascontiguousarray(g)), torch.from_numpy(np.ascontiguousarray(p))
        try:
            keys, cnt = id_pair_counts(g, p)
        except ValueError:  # ids out of range: the lookup-table path names them
            pass
        else:
            keys, cnt = keys.numpy(), cnt.numpy()
            pred_of_key = keys & (OFFSET - 1)
            gs, ps = _id_slots(keys >> 24, gt_ids), _id_slots(pred_of_key, pred_ids)
            counts = np.zeros((n_gt, n_pred), dtype=np.int64)
            np.add.at(counts, (gs, ps), cnt)
            return counts, np.unique(pred_of_key[ps == 0])
    pred_slot = _slots(pred_id_map, pred_ids, image_id, "predicted")
    joint = _slots(gt_id_map, gt_ids, image_id, "gt", scale=n_pred)
    joint += pred_slot
    counts = np.bincount(joint.ravel(), minlength=n_gt * n_pred).reshape(n_gt, n_pred)
    unknown = (
        np.unique(pred_id_map[pred_slot == 0]) if counts[:, 0].any() else np.zeros(0, np.int64)
    )
    return counts, unknown


def panoptic_image_stats(
    gt_id_map: np.ndarray,
    gt_segments: List[dict],
    pred_id_map: np.ndarray,
    pred_segments: List[dict],
    categories: Dict[int, dict],
    image_id=None,
) -> PanopticImageStats:
    """TP/FP/FN/IoU-sum per category of one image, by panopticapi's rules (module doc);
    arguments as :func:`panoptic_image_matches`."""
    return panoptic_image_matches(
        gt_id_map, gt_segments, pred_id_map, pred_segments, categories, image_id
    ).stats


def panoptic_image_matches(
    gt_id_map: np.ndarray,
    gt_segments: List[dict],
    pred_id_map: np.ndarray,
    pred_segments: List[dict],
    categories: Dict[int, dict],
    image_id=None,
) -> PanopticImageMatches:
    """:func:`panoptic_image_stats` plus the matched (gt id, predicted id) pairs.

    An id map may be several frames stacked (``(T * H, W)``) with the segments of the
    ``T`` frames merged per id (gt areas summed): the counts are then those of the tubes, as
    VPQ scores them (:mod:`d2ext.evaluation.vpq`).

    Args:
        gt_id_map, pred_id_map: (H, W) integer segment ids (``rgb2id`` of the PNGs), 0 = VOID.
        gt_segments: gt ``segments_info`` dicts with "id", "category_id", "iscrowd", "area".
        pred_segments: predicted ``segments_info`` dicts with "id", "category_id".
        categories: {category id: category dict}, as panopticapi builds from the gt json.
        image_id: named in error messages.
    """
    gt_id_map, pred_id_map = np.asarray(gt_id_map), np.asarray(pred_id_map)
    if gt_id_map.shape != pred_id_map.shape or gt_id_map.ndim != 2:
        raise ValueError(
            f"image_id={image_id}: gt and predicted id maps must be (H, W) of one size, got "
            f"{gt_id_map.shape} and {pred_id_map.shape}"
        )
    gt = _segments_by_id(gt_segments, image_id, "gt")
    pred = _segments_by_id(pred_segments, image_id, "predicted")
    gt_ids = np.fromiter(gt, dtype=np.int64, count=len(gt))
    pred_ids = np.fromiter(pred, dtype=np.int64, count=len(pred))

    counts, unknown = _overlaps(gt_id_map, gt_ids, pred_id_map, pred_ids, image_id)
    pred_area = counts.sum(axis=0)
    if pred_area[0] > 0:
        raise KeyError(
            f"image_id={image_id}: predicted segment ids {unknown[:10].tolist()} are in the PNG "
            f"but not in segments_info"
        )
    pred_area = pred_area[2:]
    if (pred_area == 0).any():
        raise KeyError(
            f"image_id={image_id}: predicted segment ids {pred_ids[pred_area == 0][:10].tolist()} "
            f"are in segments_info but not in the PNG"
        )
    pred_cat = np.array([int(s["category_id"]) for s in pred.values()], dtype=np.int64)
    for sid, cat in zip(pred_ids.tolist(), pred_cat.tolist()):
        if cat not in categories:
            raise KeyError(
                f"image_id={image_id}: predicted segment id {sid} has unknown category_id {cat}"
            )
    try:
        gt_area = np.array([s["area"] for s in gt.values()], dtype=np.float64)
    except KeyError:
        raise KeyError(f"image_id={image_id}: every gt segment needs an 'area'") from None
    gt_cat = np.array([int(s["category_id"]) for s in gt.values()], dtype=np.int64)
    gt_crowd = np.array([s.get("iscrowd", 0) == 1 for s in gt.values()], dtype=bool)

    inter = counts[2:, 2:]  # (gt segments, pred segments)
    void = counts[1, 2:]
    cand = (inter > 0) & ~gt_crowd[:, None] & (gt_cat[:, None] == pred_cat[None, :])
    g, p = np.nonzero(cand)
    union = pred_area[p] + gt_area[g] - inter[g, p] - void[p]
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter[g, p] / union
    hit = iou > 0.5
    g, p, iou = g[hit], p[hit], iou[hit]
    gt_matched = np.zeros(gt_ids.size, dtype=bool)
    gt_matched[g] = True
    pred_matched = np.zeros(pred_ids.size, dtype=bool)
    pred_matched[p] = True

    fn = ~gt_matched & ~gt_crowd
    crowd_of_cat = {c: i for i, c in enumerate(gt_cat.tolist()) if gt_crowd[i]}  # last one wins
    ignored = void.astype(np.float64)
    for j, c in enumerate(pred_cat.tolist()):
        if c in crowd_of_cat:
            ignored[j] += inter[crowd_of_cat[c], j]
    fp = ~pred_matched & ~(ignored / pred_area > 0.5)

    cats = np.concatenate([gt_cat[g], pred_cat[fp], gt_cat[fn]])
    uniq, inv = np.unique(cats, return_inverse=True)
    n_tp, n_fp = g.size, int(fp.sum())
    m = uniq.size
    stats = PanopticImageStats(
        category_id=uniq,
        iou=np.bincount(inv[:n_tp], weights=iou, minlength=m),
        tp=np.bincount(inv[:n_tp], minlength=m),
        fp=np.bincount(inv[n_tp : n_tp + n_fp], minlength=m),
        fn=np.bincount(inv[n_tp + n_fp :], minlength=m),
    )
    return PanopticImageMatches(stats, gt_ids[g], pred_ids[p])


class PQStatFast:
    """Accumulated PQ counts, panopticapi's ``PQStat`` without the per-pixel ``np.unique``.

    Categories are those of ``categories``; counts of gt segments with other categories are
    dropped (panopticapi keeps but never reports them).
    """

    def __init__(self, categories: Dict[int, dict]):
        self.categories = categories
        self._cat_ids = np.array(sorted(int(c) for c in categories), dtype=np.int64)
        n = self._cat_ids.size
        self.iou = np.zeros(n, dtype=np.float64)
        self.tp = np.zeros(n, dtype=np.int64)
        self.fp = np.zeros(n, dtype=np.int64)
        self.fn = np.zeros(n, dtype=np.int64)

    def add(self, stats: PanopticImageStats) -> "PQStatFast":
        if self._cat_ids.size == 0 or stats.category_id.size == 0:
            return self
        idx = np.minimum(np.searchsorted(self._cat_ids, stats.category_id), self._cat_ids.size - 1)
        known = self._cat_ids[idx] == stats.category_id
        idx = idx[known]  # unique: stats.category_id is
        self.iou[idx] += stats.iou[known]
        self.tp[idx] += stats.tp[known]
        self.fp[idx] += stats.fp[known]
        self.fn[idx] += stats.fn[known]
        return self

    def update(
        self, gt_id_map, gt_segments, pred_id_map, pred_segments, *, image_id=None
    ) -> "PQStatFast":
        """Add one image; arguments as :func:`panoptic_image_stats`."""
        return self.add(
            panoptic_image_stats(
                gt_id_map, gt_segments, pred_id_map, pred_segments, self.categories, image_id
            )
        )

    def __iadd__(self, other: "PQStatFast") -> "PQStatFast":
        if not np.array_equal(self._cat_ids, other._cat_ids):
            raise ValueError("cannot add PQ stats over different category sets")
        self.iou += other.iou
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        return self

    def per_category(self) -> Dict[int, Dict[str, float]]:
        """{category id: {"iou", "tp", "fp", "fn"}} as panopticapi's ``PQStatCat`` fields."""
        return {
            int(c): {
                "iou": float(self.iou[i]),
                "tp": int(self.tp[i]),
                "fp": int(self.fp[i]),
                "fn": int(self.fn[i]),
            }
            for i, c in enumerate(self._cat_ids)
        }

    def pq_average(self, categories: Dict[int, dict], isthing: Optional[bool]):
        """panopticapi's ``PQStat.pq_average``: ({"pq", "sq", "rq", "n"}, per-class results)."""
        pq, sq, rq, n = 0.0, 0.0, 0.0, 0
        per_class = {}
        stats = self.per_category()
        for label, info in categories.items():
            if isthing is not None and isthing != (info["isthing"] == 1):
                continue
            s = stats.get(int(label), {"iou": 0.0, "tp": 0, "fp": 0, "fn": 0})
            iou, tp, fp, fn = s["iou"], s["tp"], s["fp"], s["fn"]
            if tp + fp + fn == 0:
                per_class[label] = {"pq": 0.0, "sq": 0.0, "rq": 0.0}
                continue
            n += 1
            denom = tp + 0.5 * fp + 0.5 * fn
            per_class[label] = {
                "pq": iou / denom,
                "sq": iou / tp if tp != 0 else 0,
                "rq": tp / denom,
            }
            pq += per_class[label]["pq"]
            sq += per_class[label]["sq"]
            rq += per_class[label]["rq"]
        if n == 0:  # panopticapi raises ZeroDivisionError here
            return {"pq": float("nan"), "sq": float("nan"), "rq": float("nan"), "n": 0}, per_class
        return {"pq": pq / n, "sq": sq / n, "rq": rq / n, "n": n}, per_class

    def results(self) -> Dict:
        """``pq_compute``'s return value: "All" (with "per_class"), "Things", "Stuff"."""
        out = {}
        for name, isthing in (("All", None), ("Things", True), ("Stuff", False)):
            out[name], per_class = self.pq_average(self.categories, isthing)
            if name == "All":
                out["per_class"] = per_class
        return out


def pq_compute_fast(
    gt_json_file: str,
    pred_json_file: str,
    gt_folder: Optional[str] = None,
    pred_folder: Optional[str] = None,
    *,
    num_workers: Optional[int] = None,
) -> Dict:
    """panopticapi's ``pq_compute`` (same arguments and result) with O(HW) matching.

    Args:
        gt_json_file, pred_json_file: COCO panoptic jsons; predictions are matched to the gt
            annotations by ``image_id``.
        gt_folder, pred_folder: the PNG folders (default: the json path without ".json").
        num_workers: threads reading and matching images (default: the CPU count, at most 8,
            as panopticapi's process pool); 0 or 1 runs in this thread.

    Returns:
        {"All": {"pq", "sq", "rq", "n"}, "per_class": {cat: {"pq", "sq", "rq"}},
        "Things": {...}, "Stuff": {...}}, PQ/SQ/RQ in [0, 1].
    """
    with open(gt_json_file) as f:
        gt_json = json.load(f)
    with open(pred_json_file) as f:
        pred_json = json.load(f)
    gt_folder = gt_folder if gt_folder is not None else gt_json_file.replace(".json", "")
    pred_folder = pred_folder if pred_folder is not None else pred_json_file.replace(".json", "")
    for folder, what in ((gt_folder, "ground truth"), (pred_folder, "predicted")):
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"Folder {folder} with {what} segmentations doesn't exist")
    categories = {el["id"]: el for el in gt_json["categories"]}
    pred_annotations = {el["image_id"]: el for el in pred_json["annotations"]}

    # the PNG reader only here: PQ statistics on id maps (panoptic_image_stats) need no PNG code
    from .panoptic_png import read_panoptic_png

    pairs = []
    for gt_ann in gt_json["annotations"]:
        if gt_ann["image_id"] not in pred_annotations:
            raise KeyError(f"no prediction for the image with id: {gt_ann['image_id']}")
        pairs.append((gt_ann, pred_annotations[gt_ann["image_id"]]))

    def image_stats(pair) -> PanopticImageStats:
        gt_ann, pred_ann = pair
        return panoptic_image_stats(
            read_panoptic_png(os.path.join(gt_folder, gt_ann["file_name"])),
            gt_ann["segments_info"],
            read_panoptic_png(os.path.join(pred_folder, pred_ann["file_name"])),
            pred_ann["segments_info"],
            categories,
            image_id=gt_ann["image_id"],
        )

    stat = PQStatFast(categories)
    workers = min(8, os.cpu_count() or 1) if num_workers is None else num_workers
    if workers > 1:  # PNG decoding releases the GIL; map() keeps the image order of the sums
        with ThreadPoolExecutor(workers) as pool:
            for image in pool.map(image_stats, pairs):
                stat.add(image)
    else:
        for pair in pairs:
            stat.add(image_stats(pair))
    results = stat.results()
    logger.info(
        "PQ over %d images: All %.3f, Things %.3f, Stuff %.3f",
        len(gt_json["annotations"]),
        results["All"]["pq"],
        results["Things"]["pq"],
        results["Stuff"]["pq"],
    )
    return results
