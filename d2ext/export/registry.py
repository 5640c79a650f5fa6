"""Which export wrapper serves which ``MODEL.META_ARCHITECTURE``."""

import importlib
from typing import Optional, Sequence

from torch import nn

from .core import ExportWrapper

__all__ = ["EXPORTABLE_MODELS", "build_export_wrapper", "export_wrapper_class"]

# meta-architecture -> (module, class) of its wrapper, imported on use
EXPORTABLE_MODELS = {
    "YOLACT": ("d2ext.export.yolact", "YOLACTExport"),
    "RetinaFace": ("d2ext.export.retinaface", "RetinaFaceExport"),
    "TopDownLandmarkDetector": ("d2ext.export.landmark", "LandmarkExport"),
}


def export_wrapper_class(model_name: str) -> type:
    """The :class:`ExportWrapper` subclass of a meta-architecture name."""
    if model_name not in EXPORTABLE_MODELS:
        raise ValueError(
            f"MODEL.META_ARCHITECTURE {model_name!r} has no d2ext export; exportable: "
            f"{sorted(EXPORTABLE_MODELS)} (D2's own models: D2's tools/deploy/export_model.py)"
        )
    module, name = EXPORTABLE_MODELS[model_name]
    return getattr(importlib.import_module(module), name)


def build_export_wrapper(
    model: nn.Module,
    fixed_shape: Optional[Sequence[int]] = None,
    raw_outputs: bool = False,
    input_format: str = "BGR",
) -> ExportWrapper:
    """The export graph of a built eval-mode model, picked by its class (or the d2ext class it
    derives from); ``input_format``: ``cfg.INPUT.FORMAT`` (the model does not hold it), stored
    in the exported file."""
    bases = [c.__name__ for c in type(model).__mro__ if c.__module__.startswith("d2ext.")]
    name = next((n for n in bases if n in EXPORTABLE_MODELS), type(model).__name__)
    return export_wrapper_class(name)(
        model, fixed_shape=fixed_shape, raw_outputs=raw_outputs, input_format=input_format
    )
