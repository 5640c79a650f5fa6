"""Export of d2ext models to TorchScript and ONNX (tools/export_model.py) and their runtime."""

from .core import EXPORT_FORMAT_VERSION, ExportWrapper, as_tensor
from .exporter import (
    METADATA_KEY,
    ONNX_OPSET,
    export_onnx,
    export_torchscript,
    load_torchscript,
    onnx_session,
    read_onnx_metadata,
    run_onnx,
    run_torchscript,
)
from .registry import EXPORTABLE_MODELS, build_export_wrapper, export_wrapper_class

__all__ = [
    "EXPORTABLE_MODELS",
    "EXPORT_FORMAT_VERSION",
    "build_export_wrapper",
    "export_wrapper_class",
    "ExportWrapper",
    "as_tensor",
    "METADATA_KEY",
    "ONNX_OPSET",
    "export_onnx",
    "export_torchscript",
    "load_torchscript",
    "onnx_session",
    "read_onnx_metadata",
    "run_onnx",
    "run_torchscript",
]
