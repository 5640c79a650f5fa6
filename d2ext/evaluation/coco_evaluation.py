"""D2's ``COCOEvaluator`` with a fast ``process()`` and faster-coco-eval as the COCOeval engine.

Same constructor, same outputs (``instances_predictions.pth``, ``coco_instances_results.json``,
the ``results`` dict with per-category AP) and the same numbers as D2 with the official
pycocotools COCOeval; only two things change:

* ``process()`` run-length-encodes all masks of an image at once (:func:`encode_masks`) instead
  of one Fortran-ordered copy per mask;
* ``evaluate()`` runs ``faster_coco_eval.COCOeval_faster`` (C++ evaluateImg/accumulate, the same
  matching rules) instead of pycocotools' Python loops for box and mask AP, which D2 falls back
  to without its compiled ``COCOeval_opt``, with Python's cyclic garbage collector paused: the
  evaluation allocates hundreds of thousands of small acyclic objects (result dicts, RLEs) next
  to the loaded datasets, and the full collections they trigger cost as much as the evaluation.

Keypoint AP runs on pycocotools' ``COCOeval``, D2's own engine, so its numbers and per-category
table are D2's bit for bit: faster-coco-eval leaves categories without ground truth out of the
keypoint evaluation (one column fewer in ``precision``, so D2's per-category table no longer
lines up) and its precisions differ from pycocotools' in the last bit. The price is small: on a
COCO-val-sized keypoint set (5k images, 10k people, 10k detections) pycocotools takes ~10 s
against faster-coco-eval's ~4 s on a 2-core machine, once per evaluation.

D2's contract on bad input is kept: an unknown predicted class and keypoint counts that disagree
raise :class:`COCOEvalInputError`, an ``AssertionError`` as in D2; ground-truth annotations that
pycocotools cannot score (no "iscrowd", a non-crowd one without "area") raise its ``KeyError``
where faster-coco-eval would fill in defaults.
"""

import contextlib
import copy
import gc
import io
import itertools
import json
import logging
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from detectron2.evaluation import COCOEvaluator
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.structures import Instances
from detectron2.utils.file_io import PathManager

from .rle import encode_masks

__all__ = [
    "COCOEvalInputError",
    "FastCOCOEvaluator",
    "instances_to_coco_json_fast",
    "evaluate_predictions_on_coco_fast",
]

logger = logging.getLogger(__name__)


class COCOEvalInputError(ValueError, AssertionError):
    """Predictions or settings COCO AP cannot be computed for (an unknown predicted class,
    keypoint counts that disagree), with a message naming them.

    Also an ``AssertionError``: D2's ``COCOEvaluator`` asserts these conditions, and code written
    against it (D2's own ``test_unknown_category``) catches that type. (A negative class, which
    D2's assertion lets through to a bare ``KeyError`` in its id lookup, raises this too.)
    """


@contextlib.contextmanager
def _gc_paused():
    """Pause Python's cyclic garbage collector (reference counting still frees everything
    acyclic); restores the previous state."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _check_instances(instances: Instances, img_id, image_size: Optional[Sequence[int]]) -> None:
    """Raise a ValueError naming the image and field for predictions COCOeval cannot rank."""
    if instances.has("scores"):
        bad = ~torch.isfinite(instances.scores)
        if bad.any():
            raise ValueError(
                f"image_id={img_id}: instances.scores has non-finite values at indices "
                f"{bad.nonzero().flatten().tolist()[:10]}; COCO AP needs finite scores to rank"
            )
    if instances.has("pred_boxes"):
        boxes = instances.pred_boxes.tensor
        bad = ~torch.isfinite(boxes).all(dim=1)
        if bad.any():
            raise ValueError(
                f"image_id={img_id}: instances.pred_boxes has non-finite coordinates at indices "
                f"{bad.nonzero().flatten().tolist()[:10]}"
            )
    if instances.has("pred_masks"):
        masks = instances.pred_masks
        if masks.dim() != 3:
            raise ValueError(
                f"image_id={img_id}: instances.pred_masks must be (N, H, W) full-image masks, "
                f"got shape {tuple(masks.shape)} (paste them with D2's paste_masks_in_image)"
            )
        if image_size is not None and tuple(masks.shape[1:]) != tuple(image_size):
            raise ValueError(
                f"image_id={img_id}: instances.pred_masks are {tuple(masks.shape[1:])} but the "
                f"image is (height, width)={tuple(image_size)}"
            )


def instances_to_coco_json_fast(
    instances: Instances, img_id, image_size: Optional[Sequence[int]] = None
) -> List[dict]:
    """D2's ``instances_to_coco_json`` with the masks encoded in one batched pass.

    Args:
        instances: predictions of one image: ``pred_boxes`` (N, 4) XYXY absolute pixels,
            ``scores`` (N,), ``pred_classes`` (N,) contiguous ids, optionally ``pred_masks``
            (N, H, W) full-image masks and ``pred_keypoints`` (N, K, 3).
        img_id: the image id written into every result.
        image_size: (height, width) the masks must have, checked when given.

    Returns:
        COCO-format result dicts, equal to D2's (the RLE ``counts`` as str).
    """
    _check_instances(instances, img_id, image_size)
    if len(instances) == 0:
        return []
    rles = None
    if instances.has("pred_masks"):
        rles = encode_masks(instances.pred_masks)
        for rle in rles:
            rle["counts"] = rle["counts"].decode("utf-8")  # json needs str, as in D2
        fields = {k: v for k, v in instances.get_fields().items() if k != "pred_masks"}
        instances = Instances(instances.image_size, **fields)
    results = instances_to_coco_json(instances.to("cpu"), img_id)
    if rles is not None:
        for result, rle in zip(results, rles):
            result["segmentation"] = rle
    return results


def _load_segm_results(coco_gt, anns: List[dict]):
    """``coco_gt.loadRes(anns)`` for mask results without "bbox" (what D2 passes for "segm"):
    the same result COCO, with the masks' areas and boxes computed in one batched call each
    instead of two calls per result."""
    from faster_coco_eval import COCO
    from faster_coco_eval.core import mask as mask_api

    if not all("segmentation" in a and "bbox" not in a for a in anns):
        return coco_gt.loadRes(anns)
    unknown = {a["image_id"] for a in anns} - set(coco_gt.getImgIds())
    if unknown:
        raise COCOEvalInputError(
            f"results for image ids {sorted(unknown)[:10]} that are not in the ground truth"
        )
    rles = [a["segmentation"] for a in anns]
    areas, boxes = mask_api.area(rles), mask_api.toBbox(rles)
    for i, ann in enumerate(anns):
        ann["area"] = areas[i]
        ann["bbox"] = boxes[i]
        ann["id"] = i + 1
        ann["iscrowd"] = 0
    res = COCO()
    res.dataset["info"] = copy.deepcopy(coco_gt.dataset.get("info", {}))
    res.dataset["images"] = list(coco_gt.dataset["images"])
    res.dataset["categories"] = copy.deepcopy(coco_gt.dataset["categories"])
    res.dataset["annotations"] = anns
    res.createIndex()
    return res


def _check_gt_annotations(coco_gt, img_ids: Optional[Sequence[int]]) -> None:
    """Raise pycocotools' ``KeyError`` for a ground-truth annotation of the evaluated images that
    its COCOeval (D2's engine) cannot score: without "iscrowd", or non-crowd without "area".
    faster-coco-eval would take defaults for them instead."""
    images = set(coco_gt.getImgIds() if img_ids is None else img_ids)
    for ann in coco_gt.dataset.get("annotations", []):
        if ann.get("image_id") not in images:
            continue
        for field in ("iscrowd", "area"):
            if field not in ann and (field == "iscrowd" or not ann["iscrowd"]):
                raise KeyError(
                    f"ground-truth annotation id={ann.get('id')} (image_id={ann.get('image_id')}) "
                    f"has no {field!r}; COCO AP needs it"
                )


def evaluate_predictions_on_coco_fast(
    coco_gt,
    coco_results: List[dict],
    iou_type: str,
    *,
    kpt_oks_sigmas: Sequence[float] = (),
    img_ids: Optional[Sequence[int]] = None,
    max_dets_per_image: Optional[List[int]] = None,
):
    """D2's ``_evaluate_predictions_on_coco`` on faster-coco-eval (keypoints: on pycocotools).

    Args:
        coco_gt: the ground truth: a ``faster_coco_eval.COCO`` for "bbox"/"segm", a
            ``pycocotools.coco.COCO`` for "keypoints" (evaluated by pycocotools' COCOeval, see
            the module doc).
        coco_results: COCO result dicts (non-empty); not modified.
        iou_type: "bbox", "segm" or "keypoints".
        kpt_oks_sigmas: keypoint OKS sigmas; empty keeps COCO's.
        img_ids: evaluate on these images only (default: all).
        max_dets_per_image: COCOeval ``maxDets`` for bbox/segm, default [1, 10, 100]; unlike
            pycocotools, faster-coco-eval's summary already reports AP at ``maxDets[-1]``, so no
            ``COCOevalMaxDets`` subclass is needed.

    Returns:
        the ``COCOeval_faster`` (``COCOeval`` for keypoints) after evaluate/accumulate/summarize
        (``stats``, ``eval``).
    """
    from faster_coco_eval import COCOeval_faster
    from pycocotools.cocoeval import COCOeval

    assert len(coco_results) > 0
    # loadRes() sets keys (id, area, ...) of each result: shallow copies keep the caller's intact,
    # where D2 deep-copies (for "segm" only; its "bbox" pass edits the caller's results)
    if iou_type == "segm":
        # as D2: without "bbox", COCO takes the mask area for the small/medium/large ranges
        coco_results = [{k: v for k, v in c.items() if k != "bbox"} for c in coco_results]
    else:
        coco_results = [dict(c) for c in coco_results]
    if iou_type == "keypoints":
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(coco_results), iou_type)
    else:
        _check_gt_annotations(coco_gt, img_ids)
        coco_dt = (
            _load_segm_results(coco_gt, coco_results)
            if iou_type == "segm"
            else coco_gt.loadRes(coco_results)
        )
        coco_eval = COCOeval_faster(coco_gt, coco_dt, iou_type, print_function=logger.info)
        coco_eval.params.maxDets = list(max_dets_per_image or [1, 10, 100])
    if img_ids is not None:
        coco_eval.params.imgIds = list(img_ids)
    if iou_type == "keypoints":
        if kpt_oks_sigmas:
            coco_eval.params.kpt_oks_sigmas = np.array(kpt_oks_sigmas)
        num_keypoints_dt = len(coco_results[0]["keypoints"]) // 3
        num_keypoints_gt = len(next(iter(coco_gt.anns.values()))["keypoints"]) // 3
        num_keypoints_oks = len(coco_eval.params.kpt_oks_sigmas)
        if not num_keypoints_oks == num_keypoints_dt == num_keypoints_gt:
            raise COCOEvalInputError(
                f"predictions have {num_keypoints_dt} keypoints, the ground truth "
                f"{num_keypoints_gt}, and there are {num_keypoints_oks} OKS sigmas "
                "(cfg.TEST.KEYPOINT_OKS_SIGMAS); they have to agree"
            )
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    return coco_eval


class FastCOCOEvaluator(COCOEvaluator):
    """Drop-in for D2's :class:`COCOEvaluator` (same arguments and results; see module doc).

    ``use_fast_impl`` is accepted for compatibility and ignored: the engine is faster-coco-eval
    for boxes and masks, whose AP equals the official pycocotools', and pycocotools itself for
    keypoints.
    """

    def __init__(
        self, dataset_name: str, tasks=None, distributed: bool = True, output_dir=None, **kwargs
    ):
        kwargs["use_fast_impl"] = (
            False  # D2's switch for its absent compiled COCOeval: off, quietly
        )
        super().__init__(dataset_name, tasks, distributed, output_dir, **kwargs)
        self._fast_coco_gt = None

    def evaluate(self, img_ids=None):
        """As D2's (same results and files), with the garbage collector paused (module doc)."""
        with _gc_paused():
            return super().evaluate(img_ids)

    def _faster_coco_gt(self):
        """The ground truth as a ``faster_coco_eval.COCO``, sharing D2's loaded json."""
        if self._fast_coco_gt is None:
            from faster_coco_eval import COCO

            with contextlib.redirect_stdout(io.StringIO()):
                self._fast_coco_gt = COCO(self._coco_api.dataset)
        return self._fast_coco_gt

    def process(self, inputs, outputs):
        """As D2's, with the masks of each image encoded in one pass (no Fortran copies).

        Args:
            inputs: D2 model inputs, dicts with "image_id" (and "height"/"width").
            outputs: dicts with "instances" (:class:`Instances`) and/or "proposals".
        """
        for input, output in zip(inputs, outputs):
            prediction = {"image_id": input["image_id"]}
            if "instances" in output:
                size = (
                    (input["height"], input["width"])
                    if "height" in input and "width" in input
                    else None
                )
                prediction["instances"] = instances_to_coco_json_fast(
                    output["instances"], input["image_id"], size
                )
            if "proposals" in output:
                prediction["proposals"] = output["proposals"].to(self._cpu_device)
            if len(prediction) > 1:
                self._predictions.append(prediction)

    def _class_names(self):
        """Names of the evaluated categories in dataset-id order (COCOeval's catIds order).

        With D2's 'standard' panoptic registration (``register_coco_panoptic``) ``thing_classes``
        names every class, things and stuff, while the instance json holds the things only: their
        names are picked through ``thing_dataset_id_to_contiguous_id``."""
        names = self._metadata.get("thing_classes", None)
        mapping = self._metadata.get("thing_dataset_id_to_contiguous_id", None)
        if names is not None and mapping and len(names) != len(mapping):
            names = [names[mapping[k]] for k in sorted(mapping)]
        return names

    def _eval_predictions(self, predictions: List[Dict], img_ids=None):
        """As D2's ``_eval_predictions`` (category un-mapping, json dump, per-task results) with
        :func:`evaluate_predictions_on_coco_fast` as the engine."""
        # copies, so that unlike D2's, evaluate() can run again on the same predictions
        coco_results = [dict(r) for r in itertools.chain(*[x["instances"] for x in predictions])]
        tasks = self._tasks or self._tasks_from_predictions(coco_results)

        if hasattr(self._metadata, "thing_dataset_id_to_contiguous_id"):
            dataset_id_to_contiguous_id = self._metadata.thing_dataset_id_to_contiguous_id
            num_classes = len(dataset_id_to_contiguous_id)
            reverse_id_mapping = {v: k for k, v in dataset_id_to_contiguous_id.items()}
            for result in coco_results:
                category_id = result["category_id"]
                if category_id not in reverse_id_mapping:
                    raise COCOEvalInputError(
                        f"image_id={result['image_id']}: a prediction has class={category_id}, but "
                        f"the dataset has {num_classes} classes, ids in [0, {num_classes - 1}]"
                    )
                result["category_id"] = reverse_id_mapping[category_id]

        if self._output_dir:
            file_path = os.path.join(self._output_dir, "coco_instances_results.json")
            self._logger.info("Saving results to {}".format(file_path))
            with PathManager.open(file_path, "w") as f:
                f.write(json.dumps(coco_results))
                f.flush()

        if not self._do_evaluation:
            self._logger.info("Annotations are not available for evaluation.")
            return

        self._logger.info(
            "Evaluating predictions with faster-coco-eval (keypoints: pycocotools) ..."
        )
        for task in sorted(tasks):
            if task not in {"bbox", "segm", "keypoints"}:
                raise COCOEvalInputError(f"unknown COCO task {task!r}")
            coco_eval = (
                evaluate_predictions_on_coco_fast(
                    self._coco_api if task == "keypoints" else self._faster_coco_gt(),
                    coco_results,
                    task,
                    kpt_oks_sigmas=self._kpt_oks_sigmas,
                    img_ids=img_ids,
                    max_dets_per_image=self._max_dets_per_image,
                )
                if len(coco_results) > 0
                else None  # as D2: COCOeval does not handle empty results
            )
            res = self._derive_coco_results(coco_eval, task, class_names=self._class_names())
            self._results[task] = res
