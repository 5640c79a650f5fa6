import os
from typing import Optional

from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.evaluation import (
    COCOEvaluator,
    COCOPanopticEvaluator,
    DatasetEvaluators,
    SemSegEvaluator,
)

from .coco_evaluation import FastCOCOEvaluator
from .panoptic_evaluation import FastCOCOPanopticEvaluator


def build_evaluator(cfg: CfgNode, dataset_name: str, output_folder: Optional[str] = None):
    """The evaluator(s) for ``dataset_name``, dispatched on its metadata ``evaluator_type``
    as D2's ``tools/train_net.py`` does; with ``cfg.D2EXT.FAST_EVAL`` the COCO and panoptic
    evaluators are d2ext's drop-ins (same results, see :mod:`d2ext.evaluation`)."""
    if output_folder is None:
        output_folder = os.path.join(cfg.OUTPUT_DIR, "inference")
    meta = MetadataCatalog.get(dataset_name)
    evaluator_type = meta.get("evaluator_type", None)
    fast = cfg.D2EXT.FAST_EVAL
    coco_cls = FastCOCOEvaluator if fast else COCOEvaluator
    panoptic_cls = FastCOCOPanopticEvaluator if fast else COCOPanopticEvaluator
    panoptic = evaluator_type == "coco_panoptic_seg"
    evaluators = []
    # a panoptic dataset gets the semantic / instance evaluators only where it has their
    # ground truth: D2's "separated" registration has sem_seg_root, the standard one need not
    if evaluator_type == "sem_seg" or (panoptic and meta.get("sem_seg_root", None)):
        evaluators.append(SemSegEvaluator(dataset_name, distributed=True, output_dir=output_folder))
    # D2's COCOEvaluator assumes thing_classes lists the json's categories; the 'standard'
    # panoptic registration lists things and stuff there (ours handles it: _class_names)
    standard_panoptic = len(meta.get("thing_classes", [])) != len(
        meta.get("thing_dataset_id_to_contiguous_id", meta.get("thing_classes", []))
    )
    if evaluator_type == "coco" or (
        panoptic and meta.get("json_file", None) and (fast or not standard_panoptic)
    ):
        evaluators.append(coco_cls(dataset_name, output_dir=output_folder))
    if panoptic:
        evaluators.append(panoptic_cls(dataset_name, output_folder))
    if not evaluators:
        raise NotImplementedError(
            f"no evaluator for dataset {dataset_name!r} with evaluator_type={evaluator_type!r}; "
            "set MetadataCatalog.get(name).evaluator_type to one of coco, coco_panoptic_seg, sem_seg"
        )
    return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)
