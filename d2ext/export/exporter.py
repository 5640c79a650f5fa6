"""Trace an :class:`ExportWrapper` to TorchScript or ONNX (D2's ``TracingAdapter``) and run the
exported files back (TorchScript, onnxruntime) as dicts keyed by the wrapper's output names.

ONNX goes through PyTorch's TorchScript-based exporter (``dynamo=False``): it is a trace, as
D2's ``export_model.py --export-method tracing --format onnx``, and it carries torchvision's
``nms`` as the ONNX ``NonMaxSuppression`` op.
"""

import json
import os
import warnings
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from detectron2.export import TracingAdapter

from .core import ExportWrapper

__all__ = [
    "ONNX_OPSET",
    "METADATA_KEY",
    "export_onnx",
    "export_torchscript",
    "load_torchscript",
    "read_onnx_metadata",
    "run_onnx",
    "run_torchscript",
    "onnx_session",
]

ONNX_OPSET = 17
# the key of the wrapper's metadata (JSON) in an ONNX file's metadata_props and the name of the
# extra file in a TorchScript archive
METADATA_KEY = "d2ext"


def _adapter(wrapper: ExportWrapper, inputs: Tuple[torch.Tensor, ...]) -> TracingAdapter:
    # eval: torch.onnx.export restores the traced module's mode afterwards, and a fresh
    # TracingAdapter is in train mode, which would flip the wrapped model to training (BN)
    adapter = TracingAdapter(wrapper, tuple(inputs)).eval()
    with torch.no_grad():
        outputs = wrapper(*inputs)
    names = tuple(sorted(outputs))
    if names != tuple(wrapper.output_names):
        raise ValueError(
            f"{type(wrapper).__name__}.output_names {wrapper.output_names} must be the sorted "
            f"keys of its outputs {names} (TracingAdapter's flattening order)"
        )
    return adapter


def _check_inputs(wrapper: ExportWrapper, inputs: Sequence[torch.Tensor]) -> Tuple:
    inputs = tuple(inputs)
    if len(inputs) != len(wrapper.input_names):
        raise ValueError(
            f"{wrapper.model_name} export takes inputs {wrapper.input_names}, got {len(inputs)}"
        )
    return inputs


def export_torchscript(
    wrapper: ExportWrapper, inputs: Sequence[torch.Tensor], path: str
) -> torch.jit.ScriptModule:
    """Trace ``wrapper`` on ``inputs`` (as D2's ``export_model.py --export-method tracing``) and
    save it with its metadata; returns the traced module."""
    inputs = _check_inputs(wrapper, inputs)
    adapter = _adapter(wrapper, inputs)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(adapter, adapter.flattened_inputs, check_trace=False)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.jit.save(traced, path, _extra_files={METADATA_KEY: json.dumps(wrapper.metadata())})
    return traced


def load_torchscript(path: str) -> Tuple[torch.jit.ScriptModule, Dict[str, Any]]:
    """A saved TorchScript export and its metadata."""
    extra = {METADATA_KEY: ""}
    module = torch.jit.load(path, _extra_files=extra)
    if not extra[METADATA_KEY]:
        raise ValueError(f"{path}: no d2ext metadata; it was not saved by d2ext's export")
    return module, json.loads(extra[METADATA_KEY])


def run_torchscript(
    module: torch.jit.ScriptModule, metadata: Dict[str, Any], inputs: Sequence[torch.Tensor]
) -> Dict[str, torch.Tensor]:
    with torch.no_grad():
        outputs = module(*inputs)
    return dict(zip(metadata["output_names"], outputs))


def export_onnx(
    wrapper: ExportWrapper,
    inputs: Sequence[torch.Tensor],
    path: str,
    opset_version: int = ONNX_OPSET,
) -> str:
    """Trace ``wrapper`` to ONNX with the wrapper's input / output names, its dynamic axes
    (none of the image axes for a fixed-shape wrapper) and its metadata; returns ``path``."""
    import onnx

    inputs = _check_inputs(wrapper, inputs)
    adapter = _adapter(wrapper, inputs)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings and the legacy-exporter notice
        torch.onnx.export(
            adapter,
            adapter.flattened_inputs,
            path,
            dynamo=False,
            opset_version=opset_version,
            input_names=list(wrapper.input_names),
            output_names=list(wrapper.output_names),
            dynamic_axes=wrapper.dynamic_axes(),
            do_constant_folding=True,
        )
    model = onnx.load(path)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(wrapper.metadata())
    onnx.save(model, path)
    return path


def onnx_session(path: str, num_threads: Optional[int] = None):
    """An onnxruntime CPU session (``num_threads`` intra-op threads; None: onnxruntime's
    default) and the file's d2ext metadata."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if num_threads:
        options.intra_op_num_threads = int(num_threads)
        options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return session, read_onnx_metadata(path, session)


def read_onnx_metadata(path: str, session=None) -> Dict[str, Any]:
    """The d2ext metadata of an exported ONNX file (clear error when it has none)."""
    if session is None:
        import onnx

        props = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
    else:
        props = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in props:
        raise ValueError(
            f"{path}: no '{METADATA_KEY}' metadata: not an ONNX file written by d2ext's "
            "tools/export_model.py"
        )
    return json.loads(props[METADATA_KEY])


def run_onnx(session, metadata: Dict[str, Any], inputs: Sequence[Any]) -> Dict[str, Any]:
    """Run an onnxruntime session on tensors / arrays; outputs as numpy arrays by name."""
    feeds = {}
    for name, value in zip(metadata["input_names"], inputs):
        feeds[name] = value.cpu().numpy() if isinstance(value, torch.Tensor) else value
    outputs = session.run(list(metadata["output_names"]), feeds)
    return dict(zip(metadata["output_names"], outputs))
