"""Single-image inference for top-down landmark models, in the shape of D2's ``DefaultPredictor``.

A top-down model (``TopDownLandmarkDetector``) localises landmarks inside boxes it is given (a
face or person detector's, or the annotation boxes), so the predictor takes the boxes along with
the image; without boxes the whole image is one box (an already cropped face or person).
"""

from typing import Optional

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model
from detectron2.structures import BoxMode, Instances

from d2ext.data.build import build_test_time_mapper

__all__ = ["LandmarkPredictor", "box_record", "check_boxes", "image_in_format"]


class LandmarkPredictor:
    """``LandmarkPredictor(cfg)(image, boxes)`` -> ``Instances`` with ``pred_keypoints``.

    Builds ``cfg``'s model in eval mode, loads ``cfg.MODEL.WEIGHTS`` and maps each call through
    the model's own test-time mapper (``INPUT.DATASET_MAPPER_NAME``, ``is_train=False``), so the
    crops are exactly those of evaluation. ``metadata`` is ``cfg.DATASETS.TEST[0]``'s (keypoint
    names and connection rules for D2's Visualizer).

    Example::

        predictor = LandmarkPredictor(cfg)
        instances = predictor(cv2.imread("face.jpg"), boxes=[[30, 40, 200, 230]])
        instances.pred_keypoints  # (1, K, 3): x, y, score in image pixels
    """

    def __init__(self, cfg: CfgNode):
        self.cfg = cfg.clone()
        self.mapper = build_test_time_mapper(cfg)
        if self.mapper is None:
            name = cfg.INPUT.get("DATASET_MAPPER_NAME", "")
            raise ValueError(
                f"LandmarkPredictor needs a top-down model whose INPUT.DATASET_MAPPER_NAME maps "
                f"test images (e.g. TopDownLandmarkMapper); got {name!r} with "
                f"MODEL.META_ARCHITECTURE={cfg.MODEL.META_ARCHITECTURE!r} (use D2's "
                f"DefaultPredictor for detectors)"
            )
        self.model = build_model(self.cfg)
        self.model.eval()
        DetectionCheckpointer(self.model).load(cfg.MODEL.WEIGHTS)
        self.input_format = cfg.INPUT.FORMAT
        self.metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "__none")

    @torch.no_grad()
    def __call__(self, original_image: np.ndarray, boxes=None) -> Instances:
        """
        Args:
            original_image: (H, W, 3) uint8 BGR image (as ``cv2.imread`` and D2's
                ``DefaultPredictor``), or (H, W) grayscale.
            boxes: (R, 4) XYXY boxes in image pixels (list, array or tensor); None or empty
                means the whole image as one box.

        Returns:
            ``Instances`` of the image's size, one per box in order: ``pred_boxes``, ``scores``,
            ``pred_classes`` and ``pred_keypoints`` (R, K, 3) (x, y, score) in image pixels
            (D2 continuous coordinates: pixel (i, j) spans [j, j + 1) x [i, i + 1)).
        """
        image = image_in_format(original_image, self.input_format, "LandmarkPredictor")
        return self.model([self.mapper(box_record(image, boxes))])[0]["instances"]


def image_in_format(image: np.ndarray, input_format: str, who: str) -> np.ndarray:
    """A uint8 (H, W, 3) BGR or (H, W) grayscale image (``cv2.imread``'s) in the model's
    ``INPUT.FORMAT`` channel order (BGR or RGB), contiguous; ``who`` names the caller in errors."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"{who}: expected a uint8 image, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:  # grayscale: the model's 3 channels, as D2's read_image converts
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{who}: expected an (H, W, 3) BGR or (H, W) image, got {image.shape}")
    if input_format == "RGB":
        image = image[:, :, ::-1]
    elif input_format != "BGR":
        raise ValueError(f"{who}: INPUT.FORMAT {input_format!r} is not BGR or RGB")
    return np.ascontiguousarray(image)


def check_boxes(boxes) -> Optional[np.ndarray]:
    """(R, 4) XYXY boxes (list, array or tensor) as a float64 array; None for None or empty."""
    if boxes is None:
        return None
    if isinstance(boxes, torch.Tensor):
        boxes = boxes.detach().cpu().numpy()
    array = np.asarray(boxes, dtype=np.float64)
    if array.size == 0:
        return None
    array = array.reshape(-1, 4) if array.ndim == 1 and array.size == 4 else array
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"boxes must be (R, 4) XYXY, got shape {np.shape(boxes)}")
    bad = ~np.isfinite(array).all(axis=1) | (array[:, 2] < array[:, 0])
    bad |= array[:, 3] < array[:, 1]
    if bad.any():
        raise ValueError(f"boxes must be finite XYXY with x1 >= x0, y1 >= y0: {array[bad]}")
    return array


def box_record(image: np.ndarray, boxes) -> dict:
    """The dataset dict a top-down model's test mapper takes: the image (in its input format)
    and ``boxes`` (see :func:`check_boxes`) as XYXY annotations; no boxes: no annotations
    (the mapper then crops the whole image)."""
    height, width = image.shape[:2]
    record = {"image": image, "height": height, "width": width, "image_id": 0}
    box_array = check_boxes(boxes)
    if box_array is not None:
        record["annotations"] = [
            {"bbox": b.tolist(), "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0} for b in box_array
        ]
    return record
