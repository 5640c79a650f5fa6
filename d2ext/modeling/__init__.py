"""Model registration: importing this package registers every d2ext meta-architecture,
backbone and head into Detectron2's registries."""

from . import (
    densepose,  # noqa: F401  (registration)
    hourglass,  # noqa: F401  (registration)
    postprocess,  # noqa: F401  (registration: fast-paste variants of stock models)
    retinaface,  # noqa: F401  (registration)
    upsnet,  # noqa: F401  (registration)
    vpsnet,  # noqa: F401  (registration)
    yolact,  # noqa: F401  (registration)
    yolact_edge,  # noqa: F401  (registration)
)
