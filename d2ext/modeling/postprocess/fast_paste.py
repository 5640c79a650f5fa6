"""Drop-in fast mask pasting for stock D2 R-CNN models.

Set ``MODEL.META_ARCHITECTURE`` to ``"FastGeneralizedRCNN"`` (Mask R-CNN, Keypoint R-CNN, any
GeneralizedRCNN config) or ``"FastPanopticFPN"`` (Panoptic FPN) and inference pastes the
instance masks with :func:`d2ext.layers.paste_masks` (fused kernel, bool output, work only inside
each box) instead of D2's ``paste_masks_in_image``; everything else - weights, checkpoints,
outputs, ``detector_postprocess`` itself - is D2's. ``MODEL.FAST_POSTPROCESS.PASTE_MASKS: False``
turns the fast paste off in these classes (A/B checks). The same in LazyConfig::

    model = L(FastGeneralizedRCNN)(**<the stock GeneralizedRCNN kwargs>, fast_paste_masks=True)

How: during ``inference(..., do_postprocess=True)`` a forward hook on ``roi_heads.mask_head``
stores ``pred_masks`` (R, 1, M, M) as a :class:`PastedROIMasks` (a D2 ``ROIMasks``), and D2's
``detector_postprocess`` - which already accepts ``ROIMasks`` - calls its ``to_bitmasks``, i.e.
our kernel. Nothing of D2's meta-architectures is copied. With ``do_postprocess=False`` the raw
outputs are untouched.

Export, as stock: tracing (``TracingAdapter``, fvcore/D2 flop counting) runs the same hook and
pastes with :func:`d2ext.layers.paste_masks` scripted into the graph (D2's paste where the
output size is traced as tensors); scripting gives the stock class (see :class:`FastPasteMixin`).
"""

import contextlib
from typing import Dict, List, Optional

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN, PanopticFPN
from detectron2.structures import BitMasks, Boxes, Instances, ROIMasks

from d2ext.layers import paste_masks

__all__ = ["PastedROIMasks", "FastPasteMixin", "FastGeneralizedRCNN", "FastPanopticFPN"]


class PastedROIMasks(ROIMasks):
    """D2 ``ROIMasks`` (R, M, M) whose ``to_bitmasks`` uses :func:`d2ext.layers.paste_masks`."""

    def to(self, device: torch.device) -> "PastedROIMasks":
        return PastedROIMasks(self.tensor.to(device))

    def __getitem__(self, item) -> "PastedROIMasks":
        return PastedROIMasks(super().__getitem__(item).tensor)

    @torch.jit.unused
    def to_bitmasks(self, boxes: Boxes, height, width, threshold: float = 0.5) -> BitMasks:
        if torch.jit.is_tracing() and (
            isinstance(height, torch.Tensor) or isinstance(width, torch.Tensor)
        ):
            # output size traced as tensors: D2's paste for tensor sizes keeps it dynamic
            return super().to_bitmasks(boxes, height, width, threshold)
        # traced with int sizes, paste_masks is scripted into the graph (script_if_tracing)
        return BitMasks(
            paste_masks(self.tensor, boxes.tensor, (int(height), int(width)), threshold)
        )


def _store_as_pasted_roi_masks(module, inputs, outputs) -> None:
    # inference output of a D2 mask head: List[Instances] with pred_masks (R, 1, M, M)
    if not isinstance(outputs, (list, tuple)):
        return
    for instances in outputs:
        if isinstance(instances, Instances) and instances.has("pred_masks"):
            masks = instances.pred_masks
            if isinstance(masks, torch.Tensor) and masks.dim() == 4 and masks.shape[1] == 1:
                instances.pred_masks = PastedROIMasks(masks[:, 0])


@contextlib.contextmanager
def _masks_pasted_by_d2ext(roi_heads: torch.nn.Module, enabled: bool):
    mask_head = getattr(roi_heads, "mask_head", None)
    if not enabled or not isinstance(mask_head, torch.nn.Module):
        yield
        return
    handle = mask_head.register_forward_hook(_store_as_pasted_roi_masks)
    try:
        yield
    finally:
        handle.remove()


def _fast_paste_from_cfg(cfg) -> Dict[str, bool]:
    # lenient: a stock D2 config (no add_d2ext_config) with only META_ARCHITECTURE changed works
    node = cfg.MODEL.get("FAST_POSTPROCESS", None)
    return {"fast_paste_masks": bool(node.PASTE_MASKS) if node is not None else True}


class _ScriptedGeneralizedRCNN(GeneralizedRCNN):
    """What :class:`FastGeneralizedRCNN` scripts to (see :class:`FastPasteMixin`)."""

    # a constant, so the training branch of ``forward`` is compiled away: D2's
    # ``scripting_with_instances`` does this for the classes of the model it is given, which
    # this class, swapped in during scripting, is not among
    training: torch.jit.Final[bool]


class _ScriptedPanopticFPN(PanopticFPN):
    """What :class:`FastPanopticFPN` scripts to (see :class:`FastPasteMixin`)."""

    training: torch.jit.Final[bool]


class FastPasteMixin:
    """The ``fast_paste_masks`` switch of a stock D2 meta-architecture with a
    ``roi_heads.mask_head`` (mixed in before it: ``class FastX(FastPasteMixin, X)``); the
    subclass's ``inference`` wraps the stock one in :meth:`_fast_paste`.

    Scripting (``torch.jit.script``, D2's ``scripting_with_instances``) gives the stock
    meta-architecture on the same submodules (``_scripted_as``, a subclass that only marks
    ``training`` constant): D2's scripted models do not post-process (``GeneralizedRCNN``
    asserts it), which is the only place the fast paste acts, and TorchScript compiles neither
    ``super()`` nor the hook's context manager.
    """

    _scripted_as: type

    @configurable
    def __init__(self, *, fast_paste_masks: bool = True, **kwargs):
        """
        Args:
            fast_paste_masks (bool): paste masks with :func:`d2ext.layers.paste_masks`.
            kwargs: those of the stock meta-architecture.
        """
        super().__init__(**kwargs)
        self.fast_paste_masks = fast_paste_masks

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        ret.update(_fast_paste_from_cfg(cfg))
        return ret

    def _fast_paste(self, do_postprocess: bool):
        """Context of one ``inference`` call: D2's post-processing pastes with d2ext's kernel."""
        return _masks_pasted_by_d2ext(self.roi_heads, self.fast_paste_masks and do_postprocess)

    def __prepare_scriptable__(self):
        stock = self._scripted_as.__new__(self._scripted_as)
        stock.__dict__.update(self.__dict__)
        for registry in ("_parameters", "_buffers", "_modules"):  # not shared with ``self``
            stock.__dict__[registry] = self.__dict__[registry].copy()
        return stock


@META_ARCH_REGISTRY.register()
class FastGeneralizedRCNN(FastPasteMixin, GeneralizedRCNN):
    """:class:`GeneralizedRCNN` whose post-processing pastes masks with d2ext's kernel."""

    _scripted_as = _ScriptedGeneralizedRCNN

    def inference(
        self,
        batched_inputs: List[Dict[str, torch.Tensor]],
        detected_instances: Optional[List[Instances]] = None,
        do_postprocess: bool = True,
    ):
        with self._fast_paste(do_postprocess):
            return super().inference(batched_inputs, detected_instances, do_postprocess)


@META_ARCH_REGISTRY.register()
class FastPanopticFPN(FastPasteMixin, PanopticFPN):
    """:class:`PanopticFPN` whose post-processing pastes masks with d2ext's kernel."""

    _scripted_as = _ScriptedPanopticFPN

    def inference(self, batched_inputs: List[Dict[str, torch.Tensor]], do_postprocess: bool = True):
        with self._fast_paste(do_postprocess):
            return super().inference(batched_inputs, do_postprocess)
