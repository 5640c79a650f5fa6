"""WIDER FACE easy / medium / hard AP as the official ``widerface_evaluate/evaluation.py``
computes it, and a D2 ``DatasetEvaluator`` on top (``evaluator_type: "widerface"``).

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

import itertools
import logging
import os
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.structures import BoxMode
from detectron2.utils import comm
from detectron2.utils.logger import create_small_table

from d2ext.data.wider_face_mat import SUBSETS, read_wider_gt_mats

__all__ = [
    "WiderFaceEvaluator",
    "evaluate_wider",
    "evaluate_wider_official",
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


def _image_match(pred: np.ndarray, gt_xywh: np.ndarray, iou_threshold: float):
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
        best, matched = _image_match(pred, gt, iou_threshold)
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


def _to_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def image_key(file_name: str) -> Key:
    """(event, file) of ``<image_root>/<event>/<file>.jpg``."""
    folder, name = os.path.split(file_name)
    return os.path.basename(folder), os.path.splitext(name)[0]


class WiderFaceEvaluator(DatasetEvaluator):
    """WIDER FACE AP (easy / medium / hard, the official protocol) and landmark NME of a face
    detector's outputs (``Instances`` with ``pred_boxes`` XYXY, ``scores`` and optionally
    ``pred_keypoints`` (N, 5, 3)), in percent.

    An image is keyed by (event, file) = (its folder name, its file name without extension).
    Ground truth: the four official ``.mat`` files in the metadata's ``wider_gt_dir``; without
    one, the dataset dicts, as one subset ``"all"`` whose keep-list is every non-crowd face
    (crowd boxes are the ignored faces). Only the processed images are scored (as D2's
    ``COCOEvaluator``); detections of images not in the ground truth still enter the score
    normalisation, as their files would in the official ``pred_dir``.

    Boxes are truncated to whole pixels as ``test_widerface.py`` writes them (``x = int(x1)``,
    ``w = int(x2) - int(x1)``) unless ``integer_boxes=False``.

    ``NME`` = 100 * mean over faces with labelled landmarks (dataset dicts, v > 0) that a
    detection recalls (the first detection in score order whose best face, by the same +1 IoU,
    is this one at IoU >= 0.5) of mean_k ||pred_k - gt_k|| / sqrt(w * h) of the face's
    annotated box: the box size normaliser, as landmarks on WIDER faces have no reliable
    inter-ocular distance for profile faces. Reported only when the outputs have
    ``pred_keypoints``.

    ``output_dir`` receives the official per-image txt files in ``widerface_txt/`` (readable by
    the official script and :func:`evaluate_wider_official`) when ``write_txt``.
    """

    def __init__(
        self,
        dataset_name: str,
        *,
        output_dir: Optional[str] = None,
        distributed: bool = True,
        write_txt: bool = True,
        integer_boxes: bool = True,
        iou_threshold: float = 0.5,
    ):
        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._distributed = distributed
        self._write_txt = write_txt
        self._integer_boxes = integer_boxes
        self._iou_threshold = iou_threshold
        self._gt_dir = MetadataCatalog.get(dataset_name).get("wider_gt_dir", None)
        self._dicts = None
        self._gt_images = None

    def reset(self):
        self._predictions = []

    def process(self, inputs, outputs):
        """Stores per image: key, ``boxes`` (N, 4) x y w h, ``scores`` (N,), ``keypoints``
        (N, K, 2) or None."""
        for inp, out in zip(inputs, outputs):
            if "instances" not in out:
                raise ValueError(f"{inp['file_name']}: the model output has no 'instances'")
            inst = out["instances"]
            if not inst.get_fields() or len(inst) == 0:  # D2 can't len() Instances without fields
                xyxy, scores, keypoints = np.zeros((0, 4)), np.zeros(0), None
            else:
                xyxy = _to_numpy(inst.pred_boxes.tensor)
                scores = _to_numpy(inst.scores)
                keypoints = (
                    _to_numpy(inst.pred_keypoints)[..., :2] if inst.has("pred_keypoints") else None
                )
            if self._integer_boxes:
                xyxy = np.trunc(xyxy)
            boxes = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
            if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
                raise ValueError(f"{inp['file_name']}: non-finite boxes or scores")
            self._predictions.append(
                {
                    "key": image_key(inp["file_name"]),
                    "boxes": boxes,
                    "scores": scores,
                    "keypoints": keypoints,
                }
            )

    def evaluate(self):
        if self._distributed:
            comm.synchronize()
            predictions = list(itertools.chain(*comm.gather(self._predictions, dst=0)))
            if not comm.is_main_process():
                return {}
        else:
            predictions = self._predictions
        if not predictions:
            logger.warning("[WiderFaceEvaluator] Did not receive valid predictions.")
            return {}
        by_key = {}
        for p in predictions:
            if p["key"] in by_key:
                raise ValueError(f"image {'/'.join(p['key'])} was processed twice")
            by_key[p["key"]] = p
        gt_images = self._ground_truth(by_key)
        detections = {k: np.column_stack([p["boxes"], p["scores"]]) for k, p in by_key.items()}
        aps = evaluate_wider(detections, gt_images, iou_threshold=self._iou_threshold)
        res = OrderedDict((f"AP-{s}", 100 * ap) for s, ap in aps.items())
        if any(p["keypoints"] is not None for p in predictions):
            res["NME"] = self._nme(by_key)
        logger.info(
            f"WIDER FACE results on {self._dataset_name} ({len(gt_images)} images, ground truth "
            f"{self._gt_dir or 'from the dataset dicts'}):\n" + create_small_table(res)
        )
        if self._output_dir and self._write_txt:
            txt_dir = os.path.join(self._output_dir, "widerface_txt")
            for (event, file), p in by_key.items():
                write_wider_predictions(txt_dir, event, file, p["boxes"], p["scores"])
        return {"widerface": res}

    # ------------------------------------------------------------------ ground truth
    def _dataset_dicts(self) -> Dict[Key, dict]:
        if self._dicts is None:
            self._dicts = {}
            for d in DatasetCatalog.get(self._dataset_name):
                key = image_key(d["file_name"])
                if key in self._dicts:
                    raise ValueError(
                        f"dataset {self._dataset_name!r}: two images are {'/'.join(key)} "
                        "(an image is keyed by its folder and file name)"
                    )
                self._dicts[key] = d
        return self._dicts

    def _ground_truth(self, by_key: Dict[Key, dict]) -> List[dict]:
        """The ground-truth images (read_wider_gt_mats dicts) of the processed images."""
        if self._gt_dir:
            if self._gt_images is None:
                self._gt_images = read_wider_gt_mats(self._gt_dir)
            gt = [g for g in self._gt_images if (g["event"], g["file"]) in by_key]
        else:
            gt = []
            for key, d in self._dataset_dicts().items():
                if key not in by_key:
                    continue
                anns = d.get("annotations", [])
                boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYWH_ABS) for a in anns]
                keep = [i for i, a in enumerate(anns) if not a.get("iscrowd", 0)]
                gt.append(
                    {
                        "event": key[0],
                        "file": key[1],
                        "boxes": np.array(boxes, dtype=np.float64).reshape(-1, 4),
                        "keep": {"all": np.array(keep, dtype=np.int64)},
                    }
                )
        unknown = len(by_key) - len(gt)
        if unknown:
            logger.warning(
                f"[WiderFaceEvaluator] {unknown} of {len(by_key)} processed images are not in "
                f"the ground truth of {self._dataset_name!r}: scored nowhere"
            )
        return gt

    # ------------------------------------------------------------------ landmarks
    def _nme(self, by_key: Dict[Key, dict]) -> float:
        """100 * mean NME of the recalled faces with labelled landmarks (class docstring)."""
        dicts, errors = self._dataset_dicts(), []
        for key, p in by_key.items():
            d = dicts.get(key)
            if d is None or p["keypoints"] is None or len(p["boxes"]) == 0:
                continue
            anns = [
                a for a in d.get("annotations", []) if not a.get("iscrowd", 0) and "keypoints" in a
            ]
            if not anns:
                continue
            gt_boxes = np.array(
                [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYWH_ABS) for a in anns],
                dtype=np.float64,
            )
            order = np.argsort(-p["scores"], kind="stable")
            pred = np.column_stack([p["boxes"], p["scores"]])[order]
            best, matched = _image_match(pred, gt_boxes, self._iou_threshold)
            for g, ann in enumerate(anns):
                hits = np.flatnonzero(matched & (best == g))
                gt = np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
                labelled = gt[:, 2] > 0
                size = (
                    np.sqrt(gt_boxes[g, 2] * gt_boxes[g, 3]) if (gt_boxes[g, 2:] > 0).all() else 0
                )
                if not len(hits) or not labelled.any() or size == 0:
                    continue
                xy = p["keypoints"][order[hits[0]]]
                if len(xy) != len(gt):
                    raise ValueError(
                        f"image {'/'.join(key)}: {len(xy)} predicted and {len(gt)} annotated landmarks"
                    )
                dist = np.linalg.norm(xy[labelled] - gt[labelled, :2], axis=1)
                errors.append(dist.mean() / size)
        if not errors:
            logger.warning(
                "[WiderFaceEvaluator] no recalled face has labelled landmarks: NME is NaN"
            )
            return float("nan")
        logger.info(f"[WiderFaceEvaluator] NME over {len(errors)} recalled faces with landmarks")
        return float(100 * np.mean(errors))
