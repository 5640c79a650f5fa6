"""Single-image inference with an exported model (ONNX through onnxruntime, or TorchScript),
returning the same D2 ``Instances`` as the eager predictors.

Detectors (YOLACT, RetinaFace) answer like D2's ``DefaultPredictor``; top-down landmark models
like ``LandmarkPredictor`` (the model's own test-time mapper makes the crops).
"""

import os
from typing import Dict, Optional, Union

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.structures import Boxes, Instances

from d2ext.data.build import build_test_time_mapper, is_top_down
from d2ext.export import (
    EXPORT_FORMAT_VERSION,
    as_tensor,
    export_wrapper_class,
    load_torchscript,
    onnx_session,
    run_onnx,
    run_torchscript,
)

from .predictor import box_record, image_in_format

__all__ = ["ExportedPredictor"]

TORCHSCRIPT_EXTENSIONS = (".ts", ".pt", ".pth", ".jit")


class ExportedPredictor:
    """``ExportedPredictor(cfg, path)(image)``: ``path`` is a file written by
    ``tools/export_model.py`` (``.onnx``: onnxruntime on CPU; ``.ts``/``.pt``: TorchScript), for
    the model of ``cfg`` (``MODEL.META_ARCHITECTURE`` must match the file's).

    Pre-processing is the eager predictor's: ``INPUT.FORMAT`` channel order and, for models
    that take the image as it comes (RetinaFace), D2's test-time ``ResizeShortestEdge`` when
    ``INPUT.MIN_SIZE_TEST`` > 0 with the outputs scaled back. YOLACT's graph stretches the image
    to its S x S input itself, so it gets the image unresized (``DefaultPredictor`` resizes the
    short side to ``MIN_SIZE_TEST`` first: a second resampling, so masks may differ along
    edges; set ``INPUT.MIN_SIZE_TEST 0`` for identical eager results).

    Args:
        num_threads: onnxruntime intra-op threads (None: its default).
    """

    def __init__(self, cfg: CfgNode, path: str, num_threads: Optional[int] = None):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"exported model {path!r} does not exist")
        self.cfg = cfg.clone()
        self.path = path
        if path.lower().endswith(".onnx"):
            session, self.export_meta = onnx_session(path, num_threads)
            self._run = lambda inputs: {
                k: as_tensor(v) for k, v in run_onnx(session, self.export_meta, inputs).items()
            }
        elif path.lower().endswith(TORCHSCRIPT_EXTENSIONS):
            module, self.export_meta = load_torchscript(path)
            self._run = lambda inputs: run_torchscript(module, self.export_meta, inputs)
        else:
            raise ValueError(
                f"{path}: unknown exported format (.onnx, or TorchScript {TORCHSCRIPT_EXTENSIONS})"
            )
        meta = self.export_meta
        if meta.get("format_version") != EXPORT_FORMAT_VERSION:
            raise ValueError(
                f"{path}: export format {meta.get('format_version')} but this d2ext reads "
                f"{EXPORT_FORMAT_VERSION}; export the model again"
            )
        arch = cfg.MODEL.META_ARCHITECTURE
        if meta.get("model_name") != arch:
            raise ValueError(
                f"{path} holds an exported {meta.get('model_name')!r} model, but the config's "
                f"MODEL.META_ARCHITECTURE is {arch!r}"
            )
        self.wrapper_class = export_wrapper_class(arch)
        self.input_format = cfg.INPUT.FORMAT
        self.metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "__none")
        self.top_down = is_top_down(cfg)
        self.mapper = build_test_time_mapper(cfg) if self.top_down else None
        self.aug = None
        if not self.top_down and not getattr(self.wrapper_class, "resizes_input", False):
            if cfg.INPUT.MIN_SIZE_TEST > 0:
                self.aug = T.ResizeShortestEdge(
                    [cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST
                )

    @torch.no_grad()
    def __call__(self, original_image: np.ndarray, boxes=None) -> Union[Dict, Instances]:
        """Detectors: ``{"instances": Instances}`` of the image's size, as ``DefaultPredictor``.
        Top-down landmark models: ``Instances`` (one per box of ``boxes``, or the whole image),
        as :class:`LandmarkPredictor`."""
        image = image_in_format(original_image, self.input_format, "ExportedPredictor")
        height, width = image.shape[:2]
        if self.top_down:
            return self._landmarks(image, boxes)
        if self.aug is not None:
            image = self.aug.get_transform(image).apply_image(image)
        h, w = image.shape[:2]
        fixed = self.export_meta.get("fixed_shape")
        if fixed and (h, w) != tuple(fixed):
            raise ValueError(
                f"{self.path} was exported for fixed {fixed[0]}x{fixed[1]} inputs; this image "
                f"is {h}x{w} after the test-time resize (export without --fixed-shape)"
            )
        tensor = torch.as_tensor(
            np.ascontiguousarray(image.transpose(2, 0, 1)), dtype=torch.float32
        )
        outputs = self._run((tensor[None],))
        inst = self.wrapper_class.outputs_to_instances(outputs, [(h, w)], self.export_meta)[0]
        return {"instances": _rescale(inst, height, width)}

    def _landmarks(self, image: np.ndarray, boxes) -> Instances:
        height, width = image.shape[:2]
        x = self.mapper(box_record(image, boxes))
        inputs = (x["crops"].float(), x["crop_to_image"].float())
        outputs = self._run(inputs)
        return self.wrapper_class.outputs_to_instances(
            outputs, [(height, width)], self.export_meta, boxes=x["boxes"]
        )[0]


def _rescale(inst: Instances, height: int, width: int) -> Instances:
    """Boxes and keypoints of a resized input back to the original image (unclipped, as the
    eager models scale to the requested ``height`` x ``width``)."""
    h, w = inst.image_size
    if (h, w) == (height, width):
        return inst
    if inst.has("pred_masks"):
        raise ValueError("masks of a resized input cannot be scaled back exactly")
    sx, sy = width / w, height / h
    out = Instances((height, width))
    for name, value in inst.get_fields().items():
        if name == "pred_boxes":
            value = Boxes(value.tensor * value.tensor.new_tensor([sx, sy, sx, sy]))
        elif name == "pred_keypoints":
            value = value.clone()
            value[..., 0] *= sx
            value[..., 1] *= sy
        out.set(name, value)
    return out
