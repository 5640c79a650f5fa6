"""DensePose chart metrics as a D2 ``DatasetEvaluator`` (``evaluator_type: "densepose"``): part
mIoU, UV error and AP over a GPS-style point similarity measured in the UV charts.

Ground truth: the dataset's DensePose-COCO json (metadata ``json_file``; ``dp_x``, ``dp_y`` in
[0, 256) of the annotation box, ``dp_I``, ``dp_U``, ``dp_V``). Predictions: per detection the
``(labels, uv)`` of :func:`d2ext.modeling.densepose.inference.densepose_chart_results` over the
box truncated to ints, quantised as the official evaluator does before scoring:
``[labels, (uv * 255).clamp(0, 255).byte()]`` (truncation), U, V read back as ``/ 255``. Only the
``MAX_DETS`` (20) best-scoring detections of an image are kept, the official ``maxDets``.

Reading a prediction at a GT point follows the official ``DensePoseCocoEval.computeOgps``:
``px = int(dp_x * w_gt / 255 + x_gt - x_det)`` (``/ 255`` there, against ``/ 256`` in training;
truncation towards zero), likewise ``py``; a point outside ``[0, int(w_det)) x [0, int(h_det))``
reads label 0. Only GT points with a part (``dp_I > 0``) count.

* ``GPS_uv`` of a (detection, person) pair: the mean over the person's points of
  ``exp(-d^2 / (2 kappa^2))`` with ``d`` the Euclidean distance between predicted and GT (U, V)
  when the predicted part is the GT part, else infinite (similarity 0). This is *not* the
  official GPS: that one measures ``d`` as the geodesic distance on the SMPL mesh between the
  vertices nearest to the two points (normalised per coarse part by mean geodesic distances),
  which needs SMPL data we do not ship. In a chart, ``kappa`` (default 0.255, the paper's GPS
  normaliser, here in chart units: a UV error of 0.3 scores 0.5) plays its role, and a wrong
  part scores 0 where the mesh would give a finite distance across the part border.
* ``GPS_uv_AP*``: COCO AP with GPS_uv in place of IoU, as the official evaluator forms it:
  thresholds 0.50:0.05:0.95, 101 recall points, ``maxDets`` 20, areas all / medium / large;
  people without DensePose points are ignored GT; per image and category, detections are
  greedily matched by score to the highest GPS_uv; a detection left unmatched (at the highest
  threshold) that overlaps a person without points by box IoU >= 0.8 is ignored, and so is
  every detection where all GT is ignored (an image without annotated people adds no false
  positives) — both the official rules. Detection areas are box areas (``loadRes``).
* ``part_mIoU``, ``part_accuracy``: over all GT points with a part, the confusion of GT part and
  predicted part, where each annotated person takes the detection it is matched to by box IoU
  >= 0.5 (detections by score, each to its best free person; an unmatched person's points read
  0); mIoU over the parts that occur (GT or predicted). ``U_MAE``, ``V_MAE``, ``UV_MAE`` (their
  mean): mean absolute U / V error on the points whose part is predicted right (NaN if none).

AP, mIoU and accuracy are in percent, the MAEs in chart units ([0, 1]).
"""

import contextlib
import copy
import io
import itertools
import json
import logging
import os
from collections import OrderedDict
from typing import Dict, List, Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.structures import BoxMode
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager
from detectron2.utils.logger import create_small_table
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

__all__ = ["DensePoseEvaluator", "evaluate_densepose", "quantize_iuv", "read_iuv_at_points"]

logger = logging.getLogger(__name__)

MAX_DETS = 20
NUM_PARTS = 24
_AP_KEYS = ("GPS_uv_AP", "GPS_uv_AP50", "GPS_uv_AP75", "GPS_uv_APm", "GPS_uv_APl", "GPS_uv_AR")


def quantize_iuv(labels: torch.Tensor, uv: torch.Tensor) -> np.ndarray:
    """(h, w) labels + (2, h, w) UV -> (3, h, w) uint8 ``[I, U * 255, V * 255]`` (truncated)."""
    return torch.cat(
        [labels[None].to(torch.uint8), (uv * 255).clamp(0, 255).to(torch.uint8)]
    ).numpy()


def _has_points(gt: Dict) -> bool:
    return bool(gt.get("dp_x"))


def read_iuv_at_points(gt: Dict, det_bbox_xywh: Sequence[float], iuv: np.ndarray):
    """GT (I, U, V) of ``gt``'s points with a part and the prediction's (I, U, V) read there
    (the module docstring's point mapping); arrays of the points with ``dp_I > 0``."""
    gx, gy, gw, gh = gt["bbox"]
    dx, dy, dw, dh = det_bbox_xywh
    gi = np.asarray(gt["dp_I"], np.float64).round().astype(np.int64)
    part = gi > 0
    px = (np.asarray(gt["dp_x"], np.float64) * gw / 255.0 + gx - dx).astype(np.int64)[part]
    py = (np.asarray(gt["dp_y"], np.float64) * gh / 255.0 + gy - dy).astype(np.int64)[part]
    bound_w, bound_h = min(int(dw), iuv.shape[2]), min(int(dh), iuv.shape[1])
    inside = (px >= 0) & (py >= 0) & (px < bound_w) & (py < bound_h)
    px, py = np.where(inside, px, 0), np.where(inside, py, 0)
    pi = np.where(inside, iuv[0, py, px], 0).astype(np.int64)
    pu, pv = iuv[1, py, px] / 255.0, iuv[2, py, px] / 255.0
    gu = np.asarray(gt["dp_U"], np.float64)[part]
    gv = np.asarray(gt["dp_V"], np.float64)[part]
    return (gi[part], gu, gv), (pi, pu, pv)


def gps_uv(gt: Dict, det_bbox_xywh: Sequence[float], iuv: np.ndarray, kappa: float) -> float:
    """GPS_uv of one (detection, person) pair (0 without points with a part)."""
    (gi, gu, gv), (pi, pu, pv) = read_iuv_at_points(gt, det_bbox_xywh, iuv)
    if len(gi) == 0:
        return 0.0
    d2 = (pu - gu) ** 2 + (pv - gv) ** 2
    return float(np.where(pi == gi, np.exp(-d2 / (2 * kappa**2)), 0.0).mean())


class _GPSCOCOeval(COCOeval):
    """pycocotools' matching and accumulation with GPS_uv as the overlap and the official
    DensePose rules on ignored people (module docstring)."""

    def __init__(self, coco_gt: COCO, coco_dt: COCO, kappa: float):
        super().__init__(coco_gt, coco_dt, "bbox")
        self.kappa = kappa
        self.params.maxDets = [MAX_DETS]
        self.params.areaRng = [[0, 1e5**2], [32**2, 96**2], [96**2, 1e5**2]]
        self.params.areaRngLbl = ["all", "medium", "large"]

    def _prepare(self):
        super()._prepare()
        for gts in self._gts.values():
            for g in gts:  # the official: a person without points is ignored (crowd or not)
                g["ignore"] = not _has_points(g)

    def _sorted_dts(self, img_id, cat_id):
        dts = self._dts[img_id, cat_id]
        order = np.argsort([-d["score"] for d in dts], kind="mergesort")
        return [dts[i] for i in order[: self.params.maxDets[-1]]]

    def computeIoU(self, imgId, catId):
        gts, dts = self._gts[imgId, catId], self._sorted_dts(imgId, catId)
        if not gts or not dts:
            return []
        out = np.zeros((len(dts), len(gts)))
        for j, g in enumerate(gts):
            if not g["ignore"]:
                for i, d in enumerate(dts):
                    out[i, j] = gps_uv(g, d["bbox"], d["iuv"], self.kappa)
        return out

    def evaluateImg(self, imgId, catId, aRng, maxDet):
        res = super().evaluateImg(imgId, catId, aRng, maxDet)
        if res is None or not len(res["dtIds"]):
            return res
        gt_ig = np.asarray(res["gtIgnore"], bool)
        if gt_ig.all():
            res["dtIgnore"][:] = True
            return res
        gts = {g["id"]: g for g in self._gts[imgId, catId]}
        dts = {d["id"]: d for d in self._dts[imgId, catId]}
        gt_list = [gts[i] for i in res["gtIds"]]
        box_iou = mask_util.iou(
            [dts[i]["bbox"] for i in res["dtIds"]],
            [g["bbox"] for g in gt_list],
            [int(g.get("iscrowd", 0)) for g in gt_list],
        )
        dtm, gtm = res["dtMatches"], res["gtMatches"]
        for k in range(len(res["dtIds"])):
            if dtm[-1, k]:
                continue
            best, m = 0.8, -1
            for j, g in enumerate(gt_list):
                if gtm[-1, j] > 0 and not g.get("iscrowd", 0):
                    continue
                if box_iou[k, j] >= best:
                    best, m = box_iou[k, j], j
            if m >= 0 and gt_ig[m]:
                res["dtIgnore"][:, k] = True
                dtm[-1, k], gtm[-1, m] = gt_list[m]["id"], res["dtIds"][k]
        return res


def _ap_stats(coco_eval: COCOeval) -> Dict[str, float]:
    precision, recall = coco_eval.eval["precision"], coco_eval.eval["recall"]

    def mean(x):
        x = x[x > -1]
        return float(np.mean(x)) * 100 if x.size else float("nan")

    t50 = int(np.argmin(np.abs(coco_eval.params.iouThrs - 0.5)))
    t75 = int(np.argmin(np.abs(coco_eval.params.iouThrs - 0.75)))
    return {
        "GPS_uv_AP": mean(precision[:, :, :, 0, 0]),
        "GPS_uv_AP50": mean(precision[t50, :, :, 0, 0]),
        "GPS_uv_AP75": mean(precision[t75, :, :, 0, 0]),
        "GPS_uv_APm": mean(precision[:, :, :, 1, 0]),
        "GPS_uv_APl": mean(precision[:, :, :, 2, 0]),
        "GPS_uv_AR": mean(recall[:, :, 0, 0]),
    }


def _point_metrics(coco_gt: COCO, predictions: List[Dict]) -> Dict[str, float]:
    confusion = np.zeros((NUM_PARTS + 1, NUM_PARTS + 1), np.int64)
    u_err, v_err = [], []
    by_image = {}
    for p in predictions:
        by_image.setdefault(p["image_id"], []).append(p)
    for img_id in coco_gt.getImgIds():
        gts = [g for g in coco_gt.imgToAnns[img_id] if _has_points(g) and not g.get("iscrowd", 0)]
        if not gts:
            continue
        dts = sorted(by_image.get(img_id, []), key=lambda d: -d["score"])
        dts = [d for d in dts if d["category_id"] in {g["category_id"] for g in gts}]
        match = [-1] * len(gts)
        if dts:
            iou = mask_util.iou([d["bbox"] for d in dts], [g["bbox"] for g in gts], [0] * len(gts))
            for k in range(len(dts)):
                free = [j for j in range(len(gts)) if match[j] < 0 and iou[k, j] >= 0.5]
                if free:
                    match[max(free, key=lambda j: iou[k, j])] = k
        for g, k in zip(gts, match):
            empty = np.zeros((3, 1, 1), np.uint8)
            det = dts[k] if k >= 0 else {"bbox": [0, 0, 0, 0], "iuv": empty}
            (gi, gu, gv), (pi, pu, pv) = read_iuv_at_points(g, det["bbox"], det["iuv"])
            np.add.at(confusion, (gi, np.clip(pi, 0, NUM_PARTS)), 1)
            right = pi == gi
            u_err.append(np.abs(pu - gu)[right])
            v_err.append(np.abs(pv - gv)[right])
    tp = np.diag(confusion)[1:].astype(np.float64)
    union = confusion.sum(0)[1:] + confusion.sum(1)[1:] - tp
    total = confusion[1:].sum()
    u_all = np.concatenate(u_err) if u_err else np.zeros(0)
    v_all = np.concatenate(v_err) if v_err else np.zeros(0)
    nan = float("nan")
    return {
        "part_mIoU": float((tp[union > 0] / union[union > 0]).mean()) * 100
        if (union > 0).any()
        else nan,
        "part_accuracy": float(tp.sum() / total) * 100 if total else nan,
        "U_MAE": float(u_all.mean()) if u_all.size else nan,
        "V_MAE": float(v_all.mean()) if v_all.size else nan,
        "UV_MAE": float((u_all.mean() + v_all.mean()) / 2) if u_all.size else nan,
    }


def evaluate_densepose(
    coco_gt: COCO, predictions: List[Dict], kappa: float = 0.255
) -> Dict[str, float]:
    """All metrics of the module docstring. ``predictions``: dicts with ``image_id``,
    ``category_id`` (the json's ids), ``bbox`` (XYWH float), ``score``, ``iuv`` ((3, h, w)
    uint8 of :func:`quantize_iuv`)."""
    results = _point_metrics(coco_gt, predictions)
    if predictions:
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt = coco_gt.loadRes([dict(p) for p in predictions])
            coco_eval = _GPSCOCOeval(coco_gt, coco_dt, kappa)
            coco_eval.evaluate()
            coco_eval.accumulate()
        ap = _ap_stats(coco_eval)
    else:  # nothing detected: nothing recalled
        ap = dict.fromkeys(_AP_KEYS, 0.0)
    return {**ap, **results}


class DensePoseEvaluator(DatasetEvaluator):
    """GPS_uv AP, part mIoU and UV error of ``instances.pred_densepose`` (module docstring).
    Results: ``{"densepose": {name: value}}``; also written to ``densepose_results.json`` in
    ``output_dir``."""

    def __init__(
        self,
        dataset_name: str,
        output_dir: str = None,
        *,
        distributed: bool = True,
        kappa: float = 0.255,
    ):
        meta = MetadataCatalog.get(dataset_name)
        json_file = meta.get("json_file", None)
        if not json_file:
            raise ValueError(
                f"DensePoseEvaluator: dataset {dataset_name!r} has no json_file in its metadata "
                "(register it as densepose_coco)"
            )
        with contextlib.redirect_stdout(io.StringIO()):
            self._coco = COCO(PathManager.get_local_path(json_file))
        id_map = meta.get("thing_dataset_id_to_contiguous_id", None)
        self._to_dataset_id = {v: k for k, v in id_map.items()} if id_map else None
        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._distributed = distributed
        self._kappa = float(kappa)
        self.reset()

    def reset(self):
        self._predictions: List[Dict] = []

    def add_predictions(
        self,
        image_id,
        boxes_xyxy: torch.Tensor,
        scores: torch.Tensor,
        classes: torch.Tensor,
        charts: Sequence[Tuple[torch.Tensor, torch.Tensor]],
    ) -> None:
        """Record one image's detections: (N, 4) XYXY boxes, (N,) scores and contiguous classes,
        and their ``(labels, uv)`` charts; the best ``MAX_DETS`` by score are kept."""
        xywh = BoxMode.convert(
            boxes_xyxy.detach().cpu().double(), BoxMode.XYXY_ABS, BoxMode.XYWH_ABS
        )
        order = torch.argsort(-scores.detach().cpu(), stable=True)[:MAX_DETS].tolist()
        for k in order:
            c = int(classes[k])
            self._predictions.append(
                {
                    "image_id": image_id,
                    "category_id": self._to_dataset_id[c] if self._to_dataset_id else c,
                    "bbox": xywh[k].tolist(),
                    "score": float(scores[k]),
                    "iuv": quantize_iuv(charts[k][0].cpu(), charts[k][1].cpu()),
                }
            )

    def process(self, inputs, outputs):
        from d2ext.modeling.densepose.inference import densepose_chart_results

        for inp, out in zip(inputs, outputs):
            inst = out["instances"].to("cpu")
            if not inst.has("pred_densepose") or len(inst) == 0:
                continue
            charts = densepose_chart_results(inst.pred_densepose, inst.pred_boxes)
            self.add_predictions(
                inp["image_id"], inst.pred_boxes.tensor, inst.scores, inst.pred_classes, charts
            )

    def evaluate(self):
        predictions = self._predictions
        if self._distributed:
            comm.synchronize()
            predictions = list(itertools.chain(*comm.gather(predictions, dst=0)))
            if not comm.is_main_process():
                return {}
        if not predictions:
            logger.warning(
                f"DensePoseEvaluator: no DensePose predictions on {self._dataset_name!r}"
            )
        results = evaluate_densepose(self._coco, predictions, self._kappa)
        logger.info(
            f"DensePose chart metrics on {self._dataset_name} (GPS_uv: UV-chart distance, kappa "
            f"{self._kappa}; not the SMPL geodesic GPS):\n" + create_small_table(results)
        )
        if self._output_dir:
            PathManager.mkdirs(self._output_dir)
            with PathManager.open(
                os.path.join(self._output_dir, "densepose_results.json"), "w"
            ) as f:
                json.dump({**results, "kappa": self._kappa}, f, indent=2)
        return OrderedDict(densepose=copy.deepcopy(results))
