"""d2ext's DatasetEvaluators and the evaluator dispatch used by ``tools/train_net.py``.

* :class:`FastCOCOEvaluator`: D2's ``COCOEvaluator`` with batched RLE encoding and
  faster-coco-eval (same AP as pycocotools).
* :class:`FastCOCOPanopticEvaluator`: D2's ``COCOPanopticEvaluator`` scoring in memory with
  :func:`pq_compute_fast`'s O(HW) matching (same PQ as panopticapi).
* :mod:`.panoptic_quality`: PQ statistics of id maps (:class:`PQStatFast`,
  :func:`panoptic_image_stats`); :mod:`.panoptic_png`: panoptic PNG files -> id maps.
* :class:`LandmarkEvaluator`: NME (inter-ocular or box-diagonal), failure rate, CED AUC,
  PCK / PCKh of landmark predictions, with the CED curve as json + PNG.
* :class:`WiderFaceEvaluator`: WIDER FACE easy / medium / hard AP as the official
  ``evaluation.py`` (:func:`evaluate_wider_official` on its txt files and ``.mat`` ground
  truth, :func:`write_wider_predictions`), plus landmark NME.
* :class:`DensePoseEvaluator`: DensePose chart metrics (part mIoU, UV error, AP over a
  GPS-style similarity measured in the UV charts, ``GPS_uv``).
* :class:`VideoAPEvaluator`: YouTube-VIS video AP / AR@1/10 of tracks over spatio-temporal
  mask IoU, as the official ``ytvoseval`` (:func:`video_mask_iou`; per-frame ``Instances`` with
  track ids -> tracks: :func:`instances_to_tracks`); :class:`ClipFramesEvaluator`: the COCO
  AP of the frames of per-clip video datasets, as the video schedule produced them.
* :func:`vpq_compute`: Video Panoptic Quality (VPQ at k = 0/5/10/15, their mean, All /
  Things / Stuff) and ID switches of a Cityscapes-VPS submission folder, the numbers of the
  official ``tools/eval_vpq.py`` (:mod:`.vpq`); :class:`VPQEvaluator`: the same from per-frame
  ``panoptic_seg`` outputs with track ids, in memory (``evaluator_type: "cityscapes_vps"``).
* :func:`build_evaluator`: ``evaluator_type`` -> evaluators, one table entry per type.
"""

from .build import build_evaluator
from .clip_frames import ClipFramesEvaluator
from .coco_evaluation import COCOEvalInputError, FastCOCOEvaluator, instances_to_coco_json_fast
from .densepose_evaluation import DensePoseEvaluator
from .landmark_evaluation import LandmarkEvaluator
from .panoptic_evaluation import FastCOCOPanopticEvaluator
from .panoptic_png import read_panoptic_png
from .panoptic_quality import PQStatFast, panoptic_image_stats, pq_compute_fast
from .rle import encode_masks
from .video_ap import VideoAPEvaluator, instances_to_tracks, video_mask_iou
from .vpq import vpq_compute
from .vpq_evaluation import VPQEvaluator
from .widerface_evaluation import (
    WiderFaceEvaluator,
    evaluate_wider,
    evaluate_wider_official,
    write_wider_predictions,
)

__all__ = [
    "build_evaluator",
    "ClipFramesEvaluator",
    "COCOEvalInputError",
    "DensePoseEvaluator",
    "encode_masks",
    "instances_to_tracks",
    "FastCOCOEvaluator",
    "FastCOCOPanopticEvaluator",
    "instances_to_coco_json_fast",
    "LandmarkEvaluator",
    "PQStatFast",
    "panoptic_image_stats",
    "pq_compute_fast",
    "read_panoptic_png",
    "video_mask_iou",
    "VideoAPEvaluator",
    "vpq_compute",
    "VPQEvaluator",
    "evaluate_wider",
    "evaluate_wider_official",
    "WiderFaceEvaluator",
    "write_wider_predictions",
]
