"""WIDER FACE easy / medium / hard AP as the official ``widerface_evaluate/evaluation.py``
computes it (the D2 ``DatasetEvaluator`` on top is :mod:`.widerface_evaluation`).

The protocol (reproduced to float precision, vectorised per image instead of per detection):

* Scores are min-max normalised over the WHOLE prediction set, with the official's initial
  bounds (min starts at 1, max at 0): ``(s - min) / (max - min)``.
* Boxes are ``x y w h``; IoU is Fast R-CNN's ``bbox_overlaps`` on ``x2 = x + w`` with the
  legacy "+1" pixel (a box spans ``w + 1`` pixels). A detection (in score order) is matched to
  the face of highest IoU if that IoU >= 0.5. Matched to a face outside the subset's keep-list:
  neither TP nor FP (dropped from the proposals). Matched to a kept face: recalls it the first
  time; later detections on it stay proposals (false positives).
* 1000 thresholds ``1 - (t + 1) / 1000``; per image, the detections scoring >= a threshold give
  that threshold's proposals and recalled kept faces, summed over images; precision =
  recalled / proposals, recall = recalled / (kept faces of the subset over all images). AP is
  VOC's all-point area under the precision envelope.

Differences, none of them on files ``test_widerface.py`` writes: an image's predictions are
sorted by score (descending, stable), where the official trusts the file order (its writer sorts);
when every score is the same (``max == min``, the official's 0 / 0 and AP 0) every normalised
score is 1; :func:`evaluate_wider_official` raises naming the images without a prediction file
(the official's ``KeyError``); a subset without kept faces has AP NaN (the official's 0 / 0).
"""

import logging
import os
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from d2ext.data.wider_face_mat import SUBSETS, read_wider_gt_mats

__all__ = [
    "Key",
    "evaluate_wider",
    "evaluate_wider_official",
    "image_match",
    "read_wider_predictions",
    "wider_box_overlaps",
    "write_wider_predictions",
]

logger = logging.getLogger(__name__)

Key = Tuple[str, str]  # (event, file without extension)


def wider_box_overlaps(boxes: np.ndarray, query_boxes: np.ndarray) -> np.ndarray:
    """(N, K) IoU of XYXY boxes with the legacy "+1" pixel (Fast R-CNN's ``bbox_overlaps``, the
    official evaluation's IoU): 0 where the +1 intersection width or height is <= 0."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 1, 4)
    q = np.asarray(query_boxes, dtype=np.float64).reshape(1, -1, 4)
    iw = np.minimum(b[..., 2], q[..., 2]) - np.maximum(b[..., 0], q[..., 0]) + 1
    ih = np.minimum(b[..., 3], q[..., 3]) - np.maximum(b[..., 1], q[..., 1]) + 1
    inter = iw * ih
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    area_q = (q[..., 2] - q[..., 0] + 1) * (q[..., 3] - q[..., 1] + 1)
    overlap = (iw > 0) & (ih > 0)  # where the official computes a ratio; its union is > 0 there
    out = np.zeros(inter.shape)
    np.divide(inter, area_b + area_q - inter, out=out, where=overlap)
    return out


def _xywh_to_official_xyxy(boxes: np.ndarray) -> np.ndarray:
    # the official adds w, h to x, y (no -1): +1 in the IoU then makes a box w + 1 pixels wide
    out = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    out[:, 2:] += out[:, :2]
    return out


def _normalise_scores(predictions: Dict[Key, np.ndarray]) -> Dict[Key, np.ndarray]:
    """The official ``norm_score`` over the whole set, on copies sorted by descending score."""
    preds = {}
    for key, p in predictions.items():
        p = np.array(p, dtype=np.float64)
        if p.size and (p.ndim != 2 or p.shape[1] != 5):
            raise ValueError(f"predictions of {'/'.join(key)} must be (N, 5), got {p.shape}")
        p = p.reshape(-1, 5)
        preds[key] = p[np.argsort(-p[:, 4], kind="stable")]
    lo = min([1.0] + [p[-1, 4] for p in preds.values() if len(p)])
    hi = max([0.0] + [p[0, 4] for p in preds.values() if len(p)])
    for p in preds.values():
        p[:, 4] = (p[:, 4] - lo) / (hi - lo) if hi != lo else 1.0
    return preds


def image_match(pred: np.ndarray, gt_xywh: np.ndarray, iou_threshold: float):
    """Per detection (score order): the index of its best face and whether IoU >= threshold."""
    overlaps = wider_box_overlaps(
        _xywh_to_official_xyxy(pred[:, :4]), _xywh_to_official_xyxy(gt_xywh)
    )
    best = overlaps.argmax(axis=1)
    return best, overlaps[np.arange(len(pred)), best] >= iou_threshold


def _add_image_pr(pr_curve, best, matched, keep_mask, count) -> None:
    """Adds one image's proposals and recalled kept faces at each threshold to the (T, 2)
    ``pr_curve`` (the official ``image_eval`` + ``img_pr_info``); ``count[t]``: its detections
    scoring >= threshold t, a prefix of the score-sorted list."""
    kept = keep_mask[best]
    proposal = ~(matched & ~kept)  # matched to an ignored face: not a proposal
    hits = np.flatnonzero(matched & kept)
    first = np.zeros(len(best), dtype=np.int64)
    first[hits[np.unique(best[hits], return_index=True)[1]]] = 1  # first detection per face
    some = count > 0
    pr_curve[some, 0] += np.cumsum(proposal)[count[some] - 1]
    pr_curve[some, 1] += np.cumsum(first)[count[some] - 1]


def _voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC all-point AP: area under the precision envelope where the recall changes."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def evaluate_wider(
    predictions: Dict[Key, np.ndarray],
    gt_images: List[dict],
    *,
    subsets: Optional[Sequence[str]] = None,
    iou_threshold: float = 0.5,
    num_thresholds: int = 1000,
) -> Dict[str, float]:
    """The official WIDER FACE AP (fractions in [0, 1], see the module docstring).

    Args:
        predictions: (event, file) -> (N, 5) ``x y w h score``, raw scores; all of them enter
            the score normalisation, those of images not in ``gt_images`` count nowhere else.
        gt_images: :func:`d2ext.data.wider_face_mat.read_wider_gt_mats` dicts (``"boxes"``
            (F, 4) x y w h, ``"keep"`` {subset: 0-based face indices}); an image without
            predictions has no detections.
        subsets: keep-list names to score; None = those of the first image.

    Returns:
        {subset: AP}.
    """
    if subsets is None:
        subsets = list(gt_images[0]["keep"]) if gt_images else list(SUBSETS)
    preds = _normalise_scores(predictions)
    thresholds = 1 - np.arange(1, num_thresholds + 1) / num_thresholds
    pr_curve = {s: np.zeros((num_thresholds, 2)) for s in subsets}
    num_faces = dict.fromkeys(subsets, 0)
    for img in gt_images:
        gt = np.asarray(img["boxes"], dtype=np.float64).reshape(-1, 4)
        for s in subsets:
            num_faces[s] += len(img["keep"][s])
        pred = preds.get((img["event"], img["file"]))
        if pred is None or len(pred) == 0 or len(gt) == 0:
            continue
        best, matched = image_match(pred, gt, iou_threshold)
        count = np.searchsorted(-pred[:, 4], -thresholds, side="right")
        for s in subsets:
            keep_mask = np.zeros(len(gt), dtype=bool)
            keep_mask[np.asarray(img["keep"][s], dtype=np.int64)] = True
            _add_image_pr(pr_curve[s], best, matched, keep_mask, count)
    aps = OrderedDict()
    for s in subsets:
        if num_faces[s] == 0:
            logger.warning(f"WIDER FACE evaluation: subset {s!r} has no faces: AP is NaN")
            aps[s] = float("nan")
            continue
        with np.errstate(invalid="ignore", divide="ignore"):  # 0 / 0 where nothing is proposed
            precision = pr_curve[s][:, 1] / pr_curve[s][:, 0]
        aps[s] = _voc_ap(pr_curve[s][:, 1] / num_faces[s], precision)
    return aps


def _format_number(v: float) -> str:
    v = float(v)
    return str(int(v)) if v.is_integer() else repr(v)


def write_wider_predictions(
    pred_dir: str, event: str, file: str, boxes_xywh: np.ndarray, scores: np.ndarray
) -> str:
    """Writes ``pred_dir/<event>/<file>.txt`` as ``test_widerface.py`` does: the file name, the
    count, then one ``x y w h score`` line per detection (trailing space included), by
    descending score (the official reader relies on that order). Scores are written with full
    float64 precision so that reading them back is exact. Returns the path."""
    boxes = np.asarray(boxes_xywh, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(boxes) != len(scores):
        raise ValueError(f"{event}/{file}: {len(boxes)} boxes and {len(scores)} scores")
    order = np.argsort(-scores, kind="stable")
    lines = [file, str(len(boxes))]
    for box, score in zip(boxes[order], scores[order]):
        lines.append(" ".join(_format_number(v) for v in box) + f" {_format_number(score)} ")
    path = os.path.join(pred_dir, event, file + ".txt")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def _read_prediction_file(path: str) -> Tuple[str, np.ndarray]:
    """(file name without .jpg, (N, 5)) of one official per-image txt file."""
    with open(path) as f:
        lines = f.read().splitlines()
    if len(lines) < 2:
        raise ValueError(f"{path}: needs a file-name line and a count line")
    rows = []
    for lineno, line in enumerate(lines[2:], start=3):
        fields = line.split(" ")
        if fields[0] == "":  # the official reader skips lines starting with a blank
            continue
        try:
            values = [float(x) for x in fields[:5]]
        except ValueError:
            values = []
        if len(values) != 5:
            raise ValueError(f"{path}:{lineno}: expected 'x y w h score', got {line!r}")
        rows.append(values)
    if lines[1].strip() != str(len(rows)):
        raise ValueError(f"{path}:2: count {lines[1]!r} but {len(rows)} detections follow")
    name = lines[0].strip().split("/")[-1]
    name = name[: -len(".jpg")] if name.endswith(".jpg") else name
    return name, np.array(rows, dtype=np.float64).reshape(-1, 5)


def read_wider_predictions(pred_dir: str) -> Dict[Key, np.ndarray]:
    """(event, file) -> (N, 5) ``x y w h score`` of a folder of ``<event>/<file>.txt`` files; an
    image is named by its file's first line, as the official reader does."""
    if not os.path.isdir(pred_dir):
        raise FileNotFoundError(f"no prediction folder {pred_dir}")
    preds = {}
    for event in sorted(os.listdir(pred_dir)):
        event_dir = os.path.join(pred_dir, event)
        if not os.path.isdir(event_dir):
            continue
        for name in sorted(os.listdir(event_dir)):
            if name.endswith(".txt"):
                file, boxes = _read_prediction_file(os.path.join(event_dir, name))
                preds[(event, file)] = boxes
    return preds


def evaluate_wider_official(pred_dir: str, gt_dir: str) -> Dict[str, float]:
    """The official ``evaluation(pred_dir, gt_dir)``: ``{"easy": ap, "medium": ap, "hard": ap}``
    (fractions) from per-image txt files and the four official ``.mat`` files. Every image of
    the ground truth needs its prediction file (raises naming the missing ones)."""
    preds = read_wider_predictions(pred_dir)
    gt = read_wider_gt_mats(gt_dir)
    missing = [f"{g['event']}/{g['file']}" for g in gt if (g["event"], g["file"]) not in preds]
    if missing:
        raise FileNotFoundError(
            f"{pred_dir}: no prediction file for {len(missing)} of the {len(gt)} images of "
            f"{gt_dir}, e.g. {', '.join(missing[:5])}.txt"
        )
    return dict(evaluate_wider(preds, gt, subsets=SUBSETS))
