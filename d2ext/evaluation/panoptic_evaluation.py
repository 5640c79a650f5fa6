"""D2's ``COCOPanopticEvaluator`` scoring predictions in memory with :mod:`.panoptic_quality`.

D2 encodes every predicted id map as a PNG in ``process()``, writes them all to a temporary
folder in ``evaluate()`` and lets panopticapi decode them again. Here ``process()`` reads the
image's gt PNG and matches it against the in-memory prediction at once, keeping only a few
numbers per image; ``evaluate()`` sums them. Results (the ``panoptic_seg`` dict with
PQ/SQ/RQ, PQ_th/..., PQ_st/...) and ``predictions.json`` are D2's.
"""

import itertools
import json
import logging
import os
from collections import OrderedDict
from typing import Dict, List, Optional

import numpy as np
from detectron2.evaluation import COCOPanopticEvaluator
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager

from .panoptic_png import read_panoptic_png
from .panoptic_quality import PanopticImageStats, PQStatFast, panoptic_image_stats

__all__ = ["FastCOCOPanopticEvaluator"]

logger = logging.getLogger(__name__)


def _log_panoptic_table(pq_res: Dict) -> None:
    """Log the PQ/SQ/RQ table of ``pq_compute``-style results as D2's evaluator does.

    D2 has no public function for this table; its private ``_print_panoptic_results`` is used
    here (d2ext's only use of it) so that the log is D2's to the character.
    """
    from detectron2.evaluation.panoptic_evaluation import _print_panoptic_results

    _print_panoptic_results(pq_res)


class FastCOCOPanopticEvaluator(COCOPanopticEvaluator):
    """Drop-in for D2's :class:`COCOPanopticEvaluator` (same arguments, results and files),
    without the PNG round-trip of the predictions.

    Needs the dataset metadata D2's evaluator needs: ``panoptic_json``, ``panoptic_root``,
    ``thing_dataset_id_to_contiguous_id``, ``stuff_dataset_id_to_contiguous_id`` (and
    ``label_divisor`` for models that return no ``segments_info``).
    """

    def __init__(self, dataset_name: str, output_dir: Optional[str] = None):
        super().__init__(dataset_name, output_dir)
        with PathManager.open(self._metadata.panoptic_json) as f:
            self._gt_json = json.load(f)
        self._gt_root = PathManager.get_local_path(self._metadata.panoptic_root)
        self._gt_annotations = {a["image_id"]: a for a in self._gt_json["annotations"]}
        self._categories = {c["id"]: c for c in self._gt_json["categories"]}
        self._stats: Dict[object, PanopticImageStats] = {}

    def reset(self):
        super().reset()
        self._stats = {}

    def _segments_from_labels(self, panoptic_img: np.ndarray):
        """D2's convention for a model without ``segments_info``: pixel value
        ``category * label_divisor + instance``, -1 = VOID; returns (ids + 1, segments_info)."""
        label_divisor = self._metadata.label_divisor
        thing_ids = set(self._metadata.thing_dataset_id_to_contiguous_id.values())
        segments_info = []
        for label in np.unique(panoptic_img):
            if label == -1:
                continue
            pred_class = int(label) // label_divisor
            segments_info.append(
                {
                    "id": int(label) + 1,
                    "category_id": pred_class,
                    "isthing": pred_class in thing_ids,
                }
            )
        return panoptic_img + 1, segments_info

    def process(self, inputs, outputs):
        """Score each image against its gt at once.

        Args:
            inputs: D2 model inputs with "image_id" and "file_name".
            outputs: dicts with "panoptic_seg" = (id map (H, W) int tensor, 0 = VOID,
                segments_info list of {"id", "category_id", "isthing"} or None).
        """
        for input, output in zip(inputs, outputs):
            panoptic_img, segments_info = output["panoptic_seg"]
            panoptic_img = panoptic_img.cpu().numpy()
            image_id = input["image_id"]
            if segments_info is None:
                panoptic_img, segments_info = self._segments_from_labels(panoptic_img)
            segments_info = [self._convert_category_id(dict(x)) for x in segments_info]
            file_name = os.path.splitext(os.path.basename(input["file_name"]))[0] + ".png"
            self._predictions.append(
                {"image_id": image_id, "file_name": file_name, "segments_info": segments_info}
            )

            gt_ann = self._gt_annotations.get(image_id)
            if gt_ann is None:  # panopticapi only scores the images of the gt json
                logger.warning(
                    f"image_id={image_id} is not in {self._metadata.panoptic_json}; not scored"
                )
                continue
            gt_ids = read_panoptic_png(os.path.join(self._gt_root, gt_ann["file_name"]))
            self._stats[image_id] = panoptic_image_stats(
                gt_ids,
                gt_ann["segments_info"],
                panoptic_img,
                segments_info,
                self._categories,
                image_id,
            )

    def evaluate(self):
        comm.synchronize()
        predictions: List[dict] = list(itertools.chain(*comm.gather(self._predictions)))
        stats: Dict[object, PanopticImageStats] = {}
        for part in comm.gather(self._stats):
            stats.update(part)
        if not comm.is_main_process():
            return

        if self._output_dir is not None:
            json_data = dict(self._gt_json, annotations=predictions)
            with PathManager.open(os.path.join(self._output_dir, "predictions.json"), "w") as f:
                f.write(json.dumps(json_data))

        pq_stat = PQStatFast(self._categories)
        for image_id in self._gt_annotations:  # the order of panopticapi's sums
            if image_id not in stats:
                raise KeyError(f"no prediction for the image with id: {image_id}")
            pq_stat.add(stats[image_id])
        pq_res = pq_stat.results()

        res = {}
        for key, name in (("", "All"), ("_th", "Things"), ("_st", "Stuff")):
            for metric in ("PQ", "SQ", "RQ"):
                res[metric + key] = 100 * pq_res[name][metric.lower()]
        _log_panoptic_table(pq_res)
        return OrderedDict({"panoptic_seg": res})
