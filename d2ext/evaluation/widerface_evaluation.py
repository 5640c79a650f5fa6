"""The D2 ``DatasetEvaluator`` of face detectors on WIDER-style data (``evaluator_type:
"widerface"``): WIDER FACE easy / medium / hard AP by the official protocol
(:mod:`.widerface_protocol`) and landmark NME."""

import itertools
import logging
import os
from collections import OrderedDict
from typing import Dict, List, Optional

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.structures import BoxMode
from detectron2.utils import comm
from detectron2.utils.logger import create_small_table

from d2ext.data.wider_face_mat import read_wider_gt_mats

from .widerface_protocol import (
    Key,
    evaluate_wider,
    evaluate_wider_official,
    image_match,
    read_wider_predictions,
    wider_box_overlaps,
    write_wider_predictions,
)

__all__ = [
    "WiderFaceEvaluator",
    "image_key",
    "evaluate_wider",
    "evaluate_wider_official",
    "read_wider_predictions",
    "wider_box_overlaps",
    "write_wider_predictions",
]

logger = logging.getLogger(__name__)


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
        # "AP_easy", not "AP-easy": D2's print_csv_format drops keys with "-" (per-category APs)
        res = OrderedDict((f"AP_{s}", 100 * ap) for s, ap in aps.items())
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
            best, matched = image_match(pred, gt_boxes, self._iou_threshold)
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
