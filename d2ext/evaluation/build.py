"""The evaluator dispatch of ``tools/train_net.py``: one table entry per ``evaluator_type``."""

import logging
import os
from typing import Callable, Dict, List, Optional

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import (
    COCOEvaluator,
    COCOPanopticEvaluator,
    DatasetEvaluator,
    DatasetEvaluators,
    SemSegEvaluator,
)

from d2ext.data.build import is_top_down

from .clip_frames import ClipFramesEvaluator
from .coco_evaluation import FastCOCOEvaluator
from .densepose_evaluation import DensePoseEvaluator
from .landmark_evaluation import LandmarkEvaluator
from .panoptic_evaluation import FastCOCOPanopticEvaluator
from .video_ap import VideoAPEvaluator
from .vpq_evaluation import VPQEvaluator
from .widerface_evaluation import WiderFaceEvaluator

__all__ = ["EVALUATOR_BUILDERS", "build_evaluator"]

logger = logging.getLogger(__name__)

# (cfg, dataset name, output folder) -> the evaluators of one dataset, in the order they run
EvaluatorBuilder = Callable[[CfgNode, str, str], List[DatasetEvaluator]]


def _coco_evaluators(cfg: CfgNode, dataset_name: str, output_folder: str) -> List[DatasetEvaluator]:
    """COCO box/mask/keypoint AP; with ``cfg.D2EXT.FAST_EVAL`` d2ext's drop-in. A top-down
    keypoint model (run on the annotation boxes) also gets PCK / PCKh (:class:`LandmarkEvaluator`),
    the pose metrics that, unlike OKS AP, do not depend on detection."""
    coco_cls = FastCOCOEvaluator if cfg.D2EXT.FAST_EVAL else COCOEvaluator
    # TEST.KEYPOINT_OKS_SIGMAS: the dataset's keypoint OKS sigmas (empty keeps COCO's 17)
    sigmas = tuple(cfg.TEST.KEYPOINT_OKS_SIGMAS)
    evaluators = [coco_cls(dataset_name, output_dir=output_folder, kpt_oks_sigmas=sigmas)]
    if is_top_down(cfg):
        evaluators += _landmark_evaluators(cfg, dataset_name, output_folder)
    return evaluators


def _sem_seg_evaluators(
    cfg: CfgNode, dataset_name: str, output_folder: str
) -> List[DatasetEvaluator]:
    """Semantic segmentation mIoU (D2's, there is no d2ext drop-in)."""
    return [SemSegEvaluator(dataset_name, distributed=True, output_dir=output_folder)]


def _coco_panoptic_evaluators(
    cfg: CfgNode, dataset_name: str, output_folder: str
) -> List[DatasetEvaluator]:
    """PQ, plus the semantic and instance evaluators where the dataset has their ground truth."""
    meta = MetadataCatalog.get(dataset_name)
    fast = cfg.D2EXT.FAST_EVAL
    evaluators = []
    # D2's "separated" registration has sem_seg_root, the standard one need not
    if meta.get("sem_seg_root", None):
        evaluators += _sem_seg_evaluators(cfg, dataset_name, output_folder)
    # D2's COCOEvaluator assumes thing_classes lists the json's categories; the 'standard'
    # panoptic registration lists things and stuff there (ours handles it: _class_names)
    standard_panoptic = len(meta.get("thing_classes", [])) != len(
        meta.get("thing_dataset_id_to_contiguous_id", meta.get("thing_classes", []))
    )
    if meta.get("json_file", None) and (fast or not standard_panoptic):
        evaluators += _coco_evaluators(cfg, dataset_name, output_folder)
    panoptic_cls = FastCOCOPanopticEvaluator if fast else COCOPanopticEvaluator
    evaluators.append(panoptic_cls(dataset_name, output_folder))
    return evaluators


def _landmark_evaluators(
    cfg: CfgNode, dataset_name: str, output_folder: str
) -> List[DatasetEvaluator]:
    """NME, failure rate, CED AUC, PCK(h) of landmark predictions (faces, top-down poses)."""
    return [LandmarkEvaluator(dataset_name, output_dir=output_folder)]


def _widerface_evaluators(
    cfg: CfgNode, dataset_name: str, output_folder: str
) -> List[DatasetEvaluator]:
    """WIDER FACE easy / medium / hard AP (the official protocol) and landmark NME."""
    return [WiderFaceEvaluator(dataset_name, output_dir=output_folder)]


def _densepose_evaluators(
    cfg: CfgNode, dataset_name: str, output_folder: str
) -> List[DatasetEvaluator]:
    """COCO box (and mask) AP on the DensePose-COCO json, then the DensePose chart metrics
    (GPS_uv AP, part mIoU, UV error)."""
    coco = _coco_evaluators(cfg, dataset_name, output_folder)
    return coco + [DensePoseEvaluator(dataset_name, output_dir=output_folder)]


def _youtube_vis_evaluators(
    cfg: CfgNode, dataset_name: str, output_folder: str
) -> List[DatasetEvaluator]:
    """YouTube-VIS video AP / AR of tracks on a per-clip dataset (the official ytvoseval,
    ``"segm_vis"``), and when its metadata names its per-frame dataset (``frame_dataset``) the
    COCO box / mask AP of the frames as the model predicted them clip by clip (``"bbox"``,
    ``"segm"``; :class:`ClipFramesEvaluator` around :func:`_coco_evaluators` of that dataset)."""
    evaluators: List[DatasetEvaluator] = [VideoAPEvaluator(dataset_name, output_dir=output_folder)]
    frame_dataset = MetadataCatalog.get(dataset_name).get("frame_dataset", None)
    if frame_dataset and _frame_dataset_usable(dataset_name, frame_dataset):
        coco = _coco_evaluators(cfg, frame_dataset, output_folder)
        evaluators += [ClipFramesEvaluator(e) for e in coco]
    return evaluators


def _frame_dataset_usable(dataset_name: str, frame_dataset: str) -> bool:
    """Whether the per-frame dataset named by a per-clip dataset's metadata is registered (else
    a warning: video AP only); it must read the same YouTube-VIS json, since frame image ids are
    only shared within one json."""
    if frame_dataset not in DatasetCatalog.list():
        logger.warning(
            f"{dataset_name}: no per-frame AP, its per-frame dataset {frame_dataset!r} "
            f"(metadata frame_dataset) is not registered; register it (format youtube_vis, the "
            f"same files) for the frames' COCO AP"
        )
        return False
    clip_json = MetadataCatalog.get(dataset_name).get("youtube_vis_json", None)
    frame_json = MetadataCatalog.get(frame_dataset).get("youtube_vis_json", None)
    if clip_json != frame_json:
        raise ValueError(
            f"dataset {dataset_name!r} reads {clip_json!r} but its frame_dataset "
            f"{frame_dataset!r} reads {frame_json!r}: the frames' image ids would not match"
        )
    return True


def _cityscapes_vps_evaluators(
    cfg: CfgNode, dataset_name: str, output_folder: str
) -> List[DatasetEvaluator]:
    """Video panoptic quality (VPQ at k = 0/5/10/15 and their mean, the official
    ``eval_vpq.py``'s numbers) and ID switches of per-frame ``panoptic_seg`` outputs whose thing
    ids are track ids."""
    return [VPQEvaluator(dataset_name, output_dir=output_folder)]


# MetadataCatalog ``evaluator_type`` -> builder. A new kind of dataset is one entry here.
EVALUATOR_BUILDERS: Dict[str, EvaluatorBuilder] = {
    "coco": _coco_evaluators,
    "coco_panoptic_seg": _coco_panoptic_evaluators,
    "sem_seg": _sem_seg_evaluators,
    "landmark": _landmark_evaluators,
    "widerface": _widerface_evaluators,
    "densepose": _densepose_evaluators,
    "youtube_vis": _youtube_vis_evaluators,
    "cityscapes_vps": _cityscapes_vps_evaluators,
}


def build_evaluator(cfg: CfgNode, dataset_name: str, output_folder: Optional[str] = None):
    """The evaluator(s) for ``dataset_name``, dispatched on its metadata ``evaluator_type``
    through :data:`EVALUATOR_BUILDERS` as D2's ``tools/train_net.py`` does; with
    ``cfg.D2EXT.FAST_EVAL`` the COCO and panoptic evaluators are d2ext's drop-ins (same results,
    see :mod:`d2ext.evaluation`).

    Returns:
        one :class:`DatasetEvaluator`, or :class:`DatasetEvaluators` when the type has several.
    """
    if output_folder is None:
        output_folder = os.path.join(cfg.OUTPUT_DIR, "inference")
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
    builder = EVALUATOR_BUILDERS.get(evaluator_type)
    evaluators = builder(cfg, dataset_name, output_folder) if builder is not None else []
    if not evaluators:
        raise NotImplementedError(
            f"no evaluator for dataset {dataset_name!r} with evaluator_type={evaluator_type!r}; "
            f"set MetadataCatalog.get(name).evaluator_type to one of {', '.join(EVALUATOR_BUILDERS)}"
        )
    return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)
