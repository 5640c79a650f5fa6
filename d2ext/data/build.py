from detectron2.config import CfgNode
from detectron2.data import DatasetMapper
from detectron2.utils.registry import Registry

MAPPER_REGISTRY = Registry("D2EXT_MAPPER")
MAPPER_REGISTRY.__doc__ = """
Train-time dataset mappers of d2ext (``d2ext.data.mappers``), selected by
``cfg.INPUT.DATASET_MAPPER_NAME``. Each is a D2 ``@configurable`` mapper:
``Mapper(cfg, is_train=True)`` must work.
"""


def build_train_mapper(cfg: CfgNode):
    """The mapper that ``cfg``'s model trains with: D2's DatasetMapper unless
    ``cfg.INPUT.DATASET_MAPPER_NAME`` names one of :data:`MAPPER_REGISTRY`."""
    name = cfg.INPUT.get("DATASET_MAPPER_NAME", "")
    if not name:
        return DatasetMapper(cfg, is_train=True)
    if name not in MAPPER_REGISTRY:
        raise KeyError(
            f"INPUT.DATASET_MAPPER_NAME={name!r} is not a registered mapper; "
            f"available: {sorted(k for k, _ in MAPPER_REGISTRY)}"
        )
    return MAPPER_REGISTRY.get(name)(cfg, is_train=True)


def build_test_time_mapper(cfg: CfgNode):
    """The ``INPUT.DATASET_MAPPER_NAME`` mapper in test mode where its class sets
    ``used_at_test_time`` (a top-down model's crops, which evaluation and inference need
    too), else None (D2's test-time DatasetMapper applies)."""
    if is_top_down(cfg):
        return MAPPER_REGISTRY.get(cfg.INPUT.DATASET_MAPPER_NAME)(cfg, is_train=False)
    return None


def is_top_down(cfg: CfgNode) -> bool:
    """Whether ``cfg``'s model localises keypoints in given boxes (its mapper crops test images)."""
    name = cfg.INPUT.get("DATASET_MAPPER_NAME", "")
    return bool(name) and getattr(MAPPER_REGISTRY.get(name), "used_at_test_time", False)
