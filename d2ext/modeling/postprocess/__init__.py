"""Fast post-processing for stock D2 models (registration happens on import):
``MODEL.META_ARCHITECTURE: "FastGeneralizedRCNN"`` / ``"FastPanopticFPN"`` paste masks with
:func:`d2ext.layers.paste_masks`; see :mod:`.fast_paste`."""

from .fast_paste import FastGeneralizedRCNN, FastPanopticFPN, PastedROIMasks

__all__ = ["FastGeneralizedRCNN", "FastPanopticFPN", "PastedROIMasks"]
