"""Loading of the optional compiled extension ``d2ext._C``.

Every op in :mod:`d2ext.layers` has a pure-torch reference with the same results, so d2ext works
without the extension. ``D2EXT_DISABLE_EXT=1`` hides it (used by tests to prove the fallback).
"""

import logging
import os

import torch

logger = logging.getLogger(__name__)

_loaded = None


def extension_available() -> bool:
    """True when ``d2ext._C`` was built and loaded (it registers ``torch.ops.d2ext.*``)."""
    global _loaded
    if _loaded is None:
        _loaded = False
        if os.environ.get("D2EXT_DISABLE_EXT", "0") != "1":
            try:
                from d2ext import _C  # noqa: F401

                _loaded = True
            except ImportError as e:  # not built: the pure-torch path is used
                logger.info("d2ext._C not available (%s); using pure-torch ops", e)
    return _loaded


def cuda_built() -> bool:
    """True when the loaded extension was compiled with CUDA kernels."""
    return extension_available() and bool(torch.ops.d2ext.built_with_cuda())
