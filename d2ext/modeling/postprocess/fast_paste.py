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
"""
import contextlib
from typing import Dict, List, Optional

import torch

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN, PanopticFPN
from detectron2.structures import BitMasks, Boxes, Instances, ROIMasks

from d2ext.layers import paste_masks

__all__ = ["PastedROIMasks", "FastGeneralizedRCNN", "FastPanopticFPN"]


class PastedROIMasks(ROIMasks):
    """D2 ``ROIMasks`` (R, M, M) whose ``to_bitmasks`` uses :func:`d2ext.layers.paste_masks`."""

    def to(self, device: torch.device) -> "PastedROIMasks":
        return PastedROIMasks(self.tensor.to(device))

    def __getitem__(self, item) -> "PastedROIMasks":
        return PastedROIMasks(super().__getitem__(item).tensor)

    @torch.jit.unused
    def to_bitmasks(self, boxes: Boxes, height, width, threshold: float = 0.5) -> BitMasks:
        if torch.jit.is_tracing():  # tracing keeps D2's traceable paste
            return super().to_bitmasks(boxes, height, width, threshold)
        return BitMasks(paste_masks(self.tensor, boxes, (int(height), int(width)), threshold))


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


@META_ARCH_REGISTRY.register()
class FastGeneralizedRCNN(GeneralizedRCNN):
    """:class:`GeneralizedRCNN` whose post-processing pastes masks with d2ext's kernel."""

    @configurable
    def __init__(self, *, fast_paste_masks: bool = True, **kwargs):
        """
        Args:
            fast_paste_masks (bool): paste masks with :func:`d2ext.layers.paste_masks`.
            kwargs: those of :class:`GeneralizedRCNN`.
        """
        super().__init__(**kwargs)
        self.fast_paste_masks = fast_paste_masks

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        ret.update(_fast_paste_from_cfg(cfg))
        return ret

    def inference(
        self,
        batched_inputs: List[Dict[str, torch.Tensor]],
        detected_instances: Optional[List[Instances]] = None,
        do_postprocess: bool = True,
    ):
        with _masks_pasted_by_d2ext(self.roi_heads, self.fast_paste_masks and do_postprocess):
            return super().inference(batched_inputs, detected_instances, do_postprocess)


@META_ARCH_REGISTRY.register()
class FastPanopticFPN(PanopticFPN):
    """:class:`PanopticFPN` whose post-processing pastes masks with d2ext's kernel."""

    @configurable
    def __init__(self, *, fast_paste_masks: bool = True, **kwargs):
        """
        Args:
            fast_paste_masks (bool): paste masks with :func:`d2ext.layers.paste_masks`.
            kwargs: those of :class:`PanopticFPN`.
        """
        super().__init__(**kwargs)
        self.fast_paste_masks = fast_paste_masks

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        ret.update(_fast_paste_from_cfg(cfg))
        return ret

    def inference(self, batched_inputs: List[Dict[str, torch.Tensor]], do_postprocess: bool = True):
        with _masks_pasted_by_d2ext(self.roi_heads, self.fast_paste_masks and do_postprocess):
            return super().inference(batched_inputs, do_postprocess)
