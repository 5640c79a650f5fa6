"""d2ext: a Detectron2 extension plugin.

``import d2ext`` registers every meta-architecture, backbone, head, dataset and evaluator into
Detectron2's registries; :func:`add_d2ext_config` adds all of d2ext's config keys to a D2 config.
"""

from . import (
    data,  # noqa: F401  (registration: synthetic datasets, mappers)
    modeling,  # noqa: F401  (registration: meta-archs, backbones, heads)
)
from .config import add_d2ext_config
from .version import __version__

__all__ = ["add_d2ext_config", "__version__"]
