"""Landmark localisation metrics as a D2 ``DatasetEvaluator`` (``evaluator_type: "landmark"``):
NME, failure rate, CED AUC, PCK and PCKh.

Ground truth is the dataset's own dicts (``DatasetCatalog.get(dataset_name)``), looked up by
``image_id``; each non-crowd annotation with ``"keypoints"`` ([x, y, v] * K in D2 image
coordinates, v > 0 = labelled) is one instance. Predictions (``instances.pred_keypoints``
(R, K, 3) xy in the same coordinates + score) pair with the annotations in order when an image
has as many of each (a top-down model predicts one instance per input box, in order), else
greedily by box IoU (``pred_boxes`` against the annotation boxes, highest IoU first, IoU > 0).
An instance without a prediction is *missing*: its error is infinite, so it fails every
threshold, adds 0 to the AUC, and is left out of the mean NME.

Metrics, per instance i over its labelled points k, with ``e_ik = ||pred_ik - gt_ik||`` (px):

* ``NME`` = 100 * mean_i(mean_k(e_ik) / d_i), in percent as the literature reports it. ``d_i``
  is the inter-ocular distance (between the two points named by the metadata's
  ``interocular_keypoints``, the outer eye corners 37 and 46 of iBUG's 68) when the dataset has
  them, else the diagonal of the annotation box: ``LandmarkEvaluator.normalizer`` says which
  (also logged and written to ``landmark_results.json``; D2's results hold floats only). An
  instance whose eye points are unlabelled or coincide falls back to its box diagonal, counted
  in a warning.
* ``FR@t`` = 100 * fraction of instances with NME_i > t (fractions of d, e.g. 0.08, 0.10).
* ``AUC@T`` = 100 * (1 / T) * integral over [0, T] of the cumulative error distribution (CED,
  the fraction of instances with NME_i <= e), computed exactly: the CED is a step function, so
  the integral is mean_i(max(0, T - NME_i)) (no sampling grid; grid-based tools such as the
  300-W scripts differ from it by their grid's resolution).
* ``PCK@t`` = 100 * fraction of labelled points with e_ik <= t * max(box width, box height).
* ``PCKh@t`` = the same with t * ``head_size`` (the MPII head segment), only reported when the
  annotations carry ``"head_size"``.
* ``missing``: the number of instances without a prediction.

``output_dir`` receives ``landmark_results.json`` (metrics + normaliser),
``landmark_per_instance.json``, ``landmark_ced.json`` (the sorted errors and their cumulative
fractions) and ``landmark_ced.png`` (the CED plot; skipped with a warning without matplotlib).
"""

import itertools
import json
import logging
import math
import os
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.structures import Boxes, BoxMode, pairwise_iou
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager
from detectron2.utils.logger import create_small_table

__all__ = ["LandmarkEvaluator", "pair_by_iou"]

logger = logging.getLogger(__name__)

# normaliser -> its name in the log and the plot
NORMALIZERS = {"interocular": "inter-ocular distance", "box_diagonal": "box diagonal"}


def _threshold_name(t: float, decimals: int) -> str:
    """``0.1`` -> ``"0.10"`` for ``decimals=2`` (the FR@0.10 of the literature); else ``%g``."""
    fixed = f"{t:.{decimals}f}"
    return fixed if float(fixed) == t else f"{t:g}"


def _check_thresholds(name: str, values: Sequence[float]) -> tuple:
    values = tuple(float(v) for v in values)
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"{name} must be finite numbers > 0, got {values}")
    return values


def pair_by_iou(pred_boxes: np.ndarray, gt_boxes: np.ndarray) -> List[Optional[int]]:
    """Greedy one-to-one matching, highest IoU first (ties: lower prediction, then gt index).

    Args:
        pred_boxes: (P, 4) XYXY absolute pixels.
        gt_boxes: (G, 4) XYXY absolute pixels.

    Returns:
        for each gt box the index of its prediction, or None (no prediction left with IoU > 0).
    """
    match: List[Optional[int]] = [None] * len(gt_boxes)
    if len(pred_boxes) == 0 or len(gt_boxes) == 0:
        return match
    iou = pairwise_iou(
        Boxes(torch.as_tensor(pred_boxes, dtype=torch.float64)),
        Boxes(torch.as_tensor(gt_boxes, dtype=torch.float64)),
    ).numpy()
    used = set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        p, g = divmod(int(flat), len(gt_boxes))
        if iou[p, g] <= 0:
            break
        if p not in used and match[g] is None:
            match[g] = p
            used.add(p)
    return match


def _percent_within(records: List[dict], scale: str, t: float) -> float:
    """100 * fraction of the records' labelled points with error <= t * record[scale] (px)."""
    errors = np.concatenate([r["point_errors"] for r in records])
    scales = np.concatenate([np.full(len(r["point_errors"]), r[scale]) for r in records])
    return float(100 * np.mean(errors <= t * scales))


def _to_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


class LandmarkEvaluator(DatasetEvaluator):
    """NME / FR / AUC / PCK / PCKh of landmark predictions (see the module docstring).

    Args:
        dataset_name: a registered dataset with landmark annotations; its metadata may carry
            ``keypoint_names`` (checked against the predictions) and ``interocular_keypoints``.
        output_dir: where the json files and the CED plot go (None: nothing is written).
        distributed: gather the predictions of all ranks; only the main process returns results.
        normalizer: ``"interocular"`` or ``"box_diagonal"``; None = interocular when the
            metadata has ``interocular_keypoints``, else the box diagonal.
        failure_thresholds: NME thresholds (fractions of the normaliser) of ``FR@t``.
        auc_threshold: upper limit T of the CED integral of ``AUC@T``.
        pck_thresholds: fractions of the box's longer side of ``PCK@t`` (0.05 is mmpose's
            default; a fraction as large as PCKh's 0.5 of a whole box accepts almost anything).
        pckh_threshold: fraction of ``head_size`` of ``PCKh@t``.
    """

    def __init__(
        self,
        dataset_name: str,
        *,
        output_dir: Optional[str] = None,
        distributed: bool = True,
        normalizer: Optional[str] = None,
        failure_thresholds: Sequence[float] = (0.08, 0.10),
        auc_threshold: float = 0.1,
        pck_thresholds: Sequence[float] = (0.05, 0.2),
        pckh_threshold: float = 0.5,
    ):
        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._distributed = distributed
        self._failure_thresholds = _check_thresholds("failure_thresholds", failure_thresholds)
        (self._auc_threshold,) = _check_thresholds("auc_threshold", [auc_threshold])
        self._pck_thresholds = _check_thresholds("pck_thresholds", pck_thresholds)
        (self._pckh_threshold,) = _check_thresholds("pckh_threshold", [pckh_threshold])

        meta = MetadataCatalog.get(dataset_name)
        names = meta.get("keypoint_names", None)
        self._num_keypoints = len(names) if names is not None else None
        eyes = meta.get("interocular_keypoints", None)
        if normalizer is None:
            normalizer = "interocular" if eyes is not None else "box_diagonal"
        if normalizer not in NORMALIZERS:
            raise ValueError(f"normalizer must be one of {tuple(NORMALIZERS)}, got {normalizer!r}")
        self._eye_indices = None
        if normalizer == "interocular":
            if eyes is None or names is None:
                raise ValueError(
                    f"normalizer='interocular' needs the metadata of {dataset_name!r} to have "
                    "keypoint_names and interocular_keypoints"
                )
            missing = [e for e in eyes if e not in names]
            if len(eyes) != 2 or missing:
                raise ValueError(
                    f"{dataset_name!r}: interocular_keypoints must be two of keypoint_names, "
                    f"got {tuple(eyes)} (not in keypoint_names: {missing})"
                )
            self._eye_indices = tuple(list(names).index(e) for e in eyes)
        self.normalizer = normalizer
        self._ground_truth = None

    def reset(self):
        self._predictions = []

    def process(self, inputs, outputs):
        """Stores per image: ``image_id``, ``keypoints`` (R, K, 3) and ``boxes`` (R, 4) or None."""
        for inp, out in zip(inputs, outputs):
            image_id = inp["image_id"]
            if "instances" not in out:
                raise ValueError(f"image_id={image_id!r}: the model output has no 'instances'")
            instances = out["instances"]
            if instances.has("pred_keypoints"):
                keypoints = _to_numpy(instances.pred_keypoints)
            elif not instances.get_fields() or len(instances) == 0:  # D2 can't len() no fields
                keypoints = np.zeros((0, self._num_keypoints or 0, 3))
            else:
                raise ValueError(f"image_id={image_id!r}: instances have no pred_keypoints")
            k = self._num_keypoints
            if keypoints.ndim != 3 or keypoints.shape[2] != 3 or (k and keypoints.shape[1] != k):
                raise ValueError(
                    f"image_id={image_id!r}: pred_keypoints must be (R, K, 3) with K = "
                    f"{k or 'the annotations keypoint count'}, got {keypoints.shape}"
                )
            boxes = None
            if instances.has("pred_boxes"):
                boxes = _to_numpy(instances.pred_boxes.tensor)
            self._predictions.append({"image_id": image_id, "keypoints": keypoints, "boxes": boxes})

    def evaluate(self):
        if self._distributed:
            comm.synchronize()
            predictions = list(itertools.chain(*comm.gather(self._predictions, dst=0)))
            if not comm.is_main_process():
                return {}
        else:
            predictions = self._predictions
        if len(predictions) == 0:
            logger.warning("[LandmarkEvaluator] Did not receive valid predictions.")
            return {}
        ground_truth = self._load_ground_truth()
        records, seen = [], set()
        for pred in predictions:
            image_id = pred["image_id"]
            if image_id in seen:
                raise ValueError(f"image_id={image_id!r} was processed twice")
            seen.add(image_id)
            if image_id not in ground_truth:
                raise KeyError(f"image_id={image_id!r} is not in dataset {self._dataset_name!r}")
            records += self._score_image(pred, ground_truth[image_id])
        if not records:
            raise ValueError(
                f"dataset {self._dataset_name!r}: none of the {len(predictions)} evaluated "
                "images has an annotation with a labelled landmark"
            )
        return OrderedDict(landmarks=self._summarize(records))

    # ------------------------------------------------------------------ ground truth
    def _load_ground_truth(self) -> Dict[object, List[dict]]:
        """image_id -> its landmark annotations (non-crowd, with "keypoints"), in dataset order."""
        if self._ground_truth is None:
            dicts = DatasetCatalog.get(self._dataset_name)
            if len(dicts) == 0:
                raise ValueError(f"dataset {self._dataset_name!r} is empty: nothing to evaluate")
            self._ground_truth = {}
            for d in dicts:
                anns = [a for a in d.get("annotations", []) if not a.get("iscrowd", 0)]
                for j, ann in enumerate(anns):
                    if "keypoints" not in ann or "bbox" not in ann:
                        raise ValueError(
                            f"dataset {self._dataset_name!r}, image_id={d['image_id']!r}, "
                            f"annotation {j}: a landmark annotation needs 'keypoints' and 'bbox'"
                        )
                self._ground_truth[d["image_id"]] = anns
        return self._ground_truth

    # ------------------------------------------------------------------ scoring
    def _score_image(self, pred: dict, anns: List[dict]) -> List[dict]:
        """One record per annotation with a labelled point: its errors and normaliser."""
        image_id, keypoints, boxes = pred["image_id"], pred["keypoints"], pred["boxes"]
        gt_boxes = np.array(
            [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns],
            dtype=np.float64,
        ).reshape(-1, 4)
        if len(keypoints) == len(anns):
            match = list(range(len(anns)))
        elif len(keypoints) and boxes is None:
            raise ValueError(
                f"image_id={image_id!r}: {len(keypoints)} predictions for {len(anns)} "
                "annotations and no pred_boxes to pair them by IoU"
            )
        else:
            match = pair_by_iou(boxes if boxes is not None else np.zeros((0, 4)), gt_boxes)
        records = []
        for j, (ann, box, p) in enumerate(zip(anns, gt_boxes, match)):
            gt = np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
            where = f"image_id={image_id!r}, annotation {j}"
            expected = self._num_keypoints or (keypoints.shape[1] if len(keypoints) else len(gt))
            if len(gt) != expected:
                raise ValueError(
                    f"{where}: {len(gt)} annotated keypoints, "
                    + (
                        f"metadata has {expected} names"
                        if self._num_keypoints
                        else f"predictions have {expected}"
                    )
                )
            labelled = gt[:, 2] > 0
            if not labelled.any():
                continue
            if not np.isfinite(gt[labelled, :2]).all():
                raise ValueError(f"{where}: labelled keypoints with non-finite coordinates")
            norm, kind = self._normaliser(gt, box, labelled)
            if not norm > 0:
                raise ValueError(f"{where}: box {box.tolist()} has a zero diagonal: no normaliser")
            if p is None:
                errors = np.full(int(labelled.sum()), np.inf)
            else:
                xy = keypoints[p, labelled, :2]
                if not np.isfinite(xy).all():
                    raise ValueError(f"image_id={image_id!r}, prediction {p}: non-finite keypoints")
                errors = np.linalg.norm(xy - gt[labelled, :2], axis=1)
            head = ann.get("head_size", None)
            if head is not None and not (math.isfinite(head) and head > 0):
                raise ValueError(f"{where}: head_size must be finite and > 0, got {head}")
            records.append(
                {
                    "image_id": image_id,
                    "annotation": j,
                    "prediction": p,
                    "nme": float(errors.mean() / norm),
                    "normalizer": kind,
                    "normalizer_px": float(norm),
                    "point_errors": errors,
                    "box_size": float(max(box[2] - box[0], box[3] - box[1])),
                    "head_size": None if head is None else float(head),
                }
            )
        return records

    def _normaliser(self, gt: np.ndarray, box: np.ndarray, labelled: np.ndarray):
        """(d in px, "interocular" | "box_diagonal") of one instance."""
        if self._eye_indices is not None:
            a, b = self._eye_indices
            if labelled[a] and labelled[b]:
                d = float(np.linalg.norm(gt[a, :2] - gt[b, :2]))
                if d > 0:
                    return d, "interocular"
        return float(math.hypot(box[2] - box[0], box[3] - box[1])), "box_diagonal"

    # ------------------------------------------------------------------ summary
    def _summarize(self, records: List[dict]) -> Dict[str, float]:
        nme = np.array([r["nme"] for r in records])
        found = np.isfinite(nme)
        missing = int((~found).sum())
        fallbacks = sum(r["normalizer"] != self.normalizer for r in records)
        if fallbacks:
            logger.warning(
                f"[LandmarkEvaluator] {fallbacks} of {len(records)} instances have unlabelled "
                "or coincident eye corners: normalised by their box diagonal instead"
            )
        if missing:
            logger.warning(f"[LandmarkEvaluator] {missing} instances have no prediction")
        res = OrderedDict()
        res["NME"] = float(100 * nme[found].mean()) if found.any() else float("nan")
        for t in self._failure_thresholds:
            res[f"FR@{_threshold_name(t, 2)}"] = float(100 * np.mean(nme > t))
        auc = float(np.mean(np.clip(self._auc_threshold - nme, 0, None)) / self._auc_threshold)
        res[f"AUC@{_threshold_name(self._auc_threshold, 1)}"] = 100 * auc
        for t in self._pck_thresholds:
            res[f"PCK@{t:g}"] = _percent_within(records, "box_size", t)
        with_head = [r for r in records if r["head_size"] is not None]
        if with_head:
            if len(with_head) < len(records):
                logger.warning(
                    f"[LandmarkEvaluator] PCKh over the {len(with_head)} of {len(records)} "
                    "instances that have a head_size"
                )
            t = self._pckh_threshold
            res[f"PCKh@{t:g}"] = _percent_within(with_head, "head_size", t)
        res["missing"] = float(missing)
        logger.info(
            f"Landmark results on {self._dataset_name} ({len(records)} instances, NME normalised "
            f"by the {NORMALIZERS[self.normalizer]}, {fallbacks} box-diagonal fallbacks):\n"
            + create_small_table(res)
        )
        if self._output_dir:
            self._write(res, records, nme, auc, fallbacks)
        return res

    def _write(self, res, records, nme, auc, fallbacks) -> None:
        PathManager.mkdirs(self._output_dir)

        def dump(name, obj):
            with PathManager.open(os.path.join(self._output_dir, name), "w") as f:
                json.dump(obj, f)

        summary = {"normalizer": self.normalizer, "box_diagonal_fallbacks": fallbacks}
        dump("landmark_results.json", {**summary, "results": res})
        per_instance = []
        for r in records:
            found = math.isfinite(r["nme"])
            row = {k: v for k, v in r.items() if k != "point_errors"}
            row.update(missing=not found, nme=r["nme"] if found else None)
            row["mean_error_px"] = float(r["point_errors"].mean()) if found else None
            per_instance.append(row)
        dump("landmark_per_instance.json", per_instance)
        errors = np.sort(nme[np.isfinite(nme)])
        curve = {
            "normalizer": self.normalizer,
            "num_instances": len(nme),
            "num_missing": int((~np.isfinite(nme)).sum()),
            "errors": errors.tolist(),  # NME_i ascending; the CED is (i + 1) / num_instances
            "fraction": (np.arange(1, len(errors) + 1) / len(nme)).tolist(),
            "auc_threshold": self._auc_threshold,
            "auc": auc,
        }
        dump("landmark_ced.json", curve)
        self._plot_ced(curve, os.path.join(self._output_dir, "landmark_ced.png"))

    def _plot_ced(self, curve: dict, path: str) -> None:
        try:  # no pyplot: an Agg canvas of its own leaves the process's backend alone
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError:
            logger.warning(f"[LandmarkEvaluator] matplotlib is not installed: no plot {path}")
            return
        x_max = max(self._auc_threshold, *self._failure_thresholds)
        errors = [e for e in curve["errors"] if e <= x_max]
        fraction = curve["fraction"][: len(errors)]
        fig = Figure(figsize=(5, 4), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        last = fraction[-1] if fraction else 0.0
        ax.step([0.0, *errors, x_max], [0.0, *fraction, last], where="post")
        for t in self._failure_thresholds:
            ax.axvline(t, color="gray", linestyle="--", linewidth=0.8)
        ax.set_xlim(0, x_max)
        ax.set_ylim(0, 1)
        ax.set_xlabel(f"NME (fraction of the {NORMALIZERS[self.normalizer]})")
        ax.set_ylabel(f"fraction of the {curve['num_instances']} instances")
        ax.set_title(
            f"{self._dataset_name}: AUC@{self._auc_threshold:g} = {100 * curve['auc']:.2f}"
        )
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        with PathManager.open(path, "wb") as f:
            fig.savefig(f, format="png")
