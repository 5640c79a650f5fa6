"""What every exportable d2ext model provides: a tensors-in, dict-of-tensors-out graph.

An :class:`ExportWrapper` holds a built (eval-mode) model and runs its whole inference as one
traceable tensor program: pre-processing from raw pixels, the network, decoding, NMS and the
model's post-processing (mask assembly, heatmap decoding), returning a dict of tensors. D2's
:class:`~detectron2.export.TracingAdapter` flattens that dict in sorted-key order, which is
therefore the order of the exported graph's outputs (``output_names``).

The same class rebuilds D2 ``Instances`` from those outputs (:meth:`outputs_to_instances`), from
torch tensors or the numpy arrays onnxruntime returns, so eager, TorchScript and ONNX results
come back in the form ``DefaultPredictor`` users know. :meth:`metadata` is stored in the exported
file (ONNX ``metadata_props`` / a TorchScript extra file) so a runtime can check what it loaded.
"""

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.structures import Instances
from torch import nn

__all__ = ["ExportWrapper", "EXPORT_FORMAT_VERSION", "as_tensor"]

# bumped when the inputs / outputs contract of an exported file changes
EXPORT_FORMAT_VERSION = 1


class ExportWrapper(nn.Module):
    """Base class of a model's export graph.

    Subclasses set ``model_name`` (the ``MODEL.META_ARCHITECTURE`` they wrap), ``input_names``
    and ``output_names`` (sorted: the dict keys of :meth:`forward`) and implement
    :meth:`forward`, :meth:`sample_inputs`, :meth:`dynamic_axes` and
    :meth:`outputs_to_instances`.

    Args:
        model: the built model in eval mode (weights loaded).
        fixed_shape: (H, W) the exported graph is specialised to (no dynamic image size), or
            None for a dynamic size where the model allows it.
    """

    model_name: str = ""
    input_names: Tuple[str, ...] = ()
    output_names: Tuple[str, ...] = ()

    def __init__(self, model: nn.Module, fixed_shape: Optional[Sequence[int]] = None):
        super().__init__()
        if model.training:
            raise ValueError(f"{type(self).__name__}: export a model in eval mode (model.eval())")
        self.model = model
        if fixed_shape is not None:
            fixed_shape = tuple(int(s) for s in fixed_shape)
            if len(fixed_shape) != 2 or min(fixed_shape) <= 0:
                raise ValueError(f"fixed_shape must be (H, W) > 0, got {fixed_shape}")
        self.fixed_shape = fixed_shape

    def train(self, mode: bool = True) -> "ExportWrapper":
        """Always eval: the graph is inference (BN running statistics), whatever mode a tracer
        restores afterwards."""
        return super().train(False)

    def forward(self, *inputs: torch.Tensor) -> Dict[str, torch.Tensor]:
        raise NotImplementedError

    def sample_inputs(self, image: np.ndarray, batch_size: int = 1) -> Tuple[torch.Tensor, ...]:
        """Graph inputs made from one (H, W, 3) uint8 image in the model's input format,
        repeated ``batch_size`` times (resized to ``fixed_shape`` when it is set)."""
        raise NotImplementedError

    def dynamic_axes(self) -> Dict[str, Dict[int, str]]:
        """``torch.onnx.export``'s ``dynamic_axes`` for the inputs and outputs of this graph
        (none of the image axes when ``fixed_shape`` is set)."""
        raise NotImplementedError

    def metadata(self) -> Dict[str, Any]:
        """JSON-able description stored in the exported file. Subclasses extend it with what
        :meth:`outputs_to_instances` and a runtime need (thresholds, input format, sizes)."""
        return {
            "format_version": EXPORT_FORMAT_VERSION,
            "model_name": self.model_name,
            "input_names": list(self.input_names),
            "output_names": list(self.output_names),
            "fixed_shape": list(self.fixed_shape) if self.fixed_shape else None,
        }

    @staticmethod
    def outputs_to_instances(
        outputs: Dict[str, Any], image_sizes: List[Tuple[int, int]], metadata: Dict[str, Any]
    ) -> List[Instances]:
        """One ``Instances`` of each input image's size from the graph's outputs (torch tensors
        or numpy arrays, keyed by ``output_names``), with the fields and dtypes the eager
        model's inference gives."""
        raise NotImplementedError

    def check_image_size(self, height: int, width: int, what: str = "image") -> None:
        """A clear error for an input the fixed-shape graph was not exported for."""
        if self.fixed_shape is not None and (height, width) != self.fixed_shape:
            raise ValueError(
                f"{self.model_name} was exported for fixed {self.fixed_shape[0]}x"
                f"{self.fixed_shape[1]} inputs; {what} is {height}x{width} (export again "
                "without --fixed-shape for dynamic sizes)"
            )


def as_tensor(value: Any) -> torch.Tensor:
    """A graph output (numpy array from onnxruntime, or a tensor) as a CPU tensor."""
    if isinstance(value, torch.Tensor):
        return value
    return torch.from_numpy(np.ascontiguousarray(value))
