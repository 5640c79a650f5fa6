"""The "standard" panoptic label space of UPSNet-style models and its link to a dataset's D2
metadata.

The semantic head predicts S stuff classes then T thing classes: channel ``s`` (0 <= s < S) is
stuff ``s`` and channel ``S + t`` is thing ``t``, where ``t`` is also the class index of the
R-CNN heads. D2 panoptic metadata (``register_coco_panoptic``) instead names each category by a
*contiguous id*, either one id space over things + stuff (D2's "coco_panoptic_standard", things
and stuff interleaved in dataset order) or two separate ones. :class:`PanopticLabelSpace` maps
between the two: internal thing ``t`` is the t-th smallest thing contiguous id, and likewise for
stuff, so the model's outputs carry the ids that D2's evaluators and Visualizer expect. The
train mapper (for the labels it writes) and the model (for the ids it outputs) both use it.
"""

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch

__all__ = ["PanopticLabelSpace"]


@dataclass(frozen=True)
class PanopticLabelSpace:
    thing_ids: Sequence[int]  # contiguous id (as in the metadata) of internal thing t
    stuff_ids: Sequence[int]  # contiguous id of internal stuff s

    @property
    def num_things(self) -> int:
        return len(self.thing_ids)

    @property
    def num_stuff(self) -> int:
        return len(self.stuff_ids)

    @classmethod
    def identity(cls, num_things: int, num_stuff: int) -> "PanopticLabelSpace":
        """Separate id spaces: things 0..T-1 and stuff 0..S-1."""
        return cls(tuple(range(num_things)), tuple(range(num_stuff)))

    @classmethod
    def from_metadata(cls, metadata, name: str = "") -> "PanopticLabelSpace":
        """From ``thing_/stuff_dataset_id_to_contiguous_id`` of a D2 panoptic dataset."""
        for key in ("thing_dataset_id_to_contiguous_id", "stuff_dataset_id_to_contiguous_id"):
            if not hasattr(metadata, key):
                raise KeyError(f"metadata of dataset {name!r} has no {key}: not a panoptic dataset")
        things = sorted(set(metadata.thing_dataset_id_to_contiguous_id.values()))
        stuff = sorted(set(metadata.stuff_dataset_id_to_contiguous_id.values()))
        if 0 in metadata.stuff_dataset_id_to_contiguous_id:
            raise ValueError(
                f"dataset {name!r} has D2's 'separated' stuff labels (dataset id 0 = all things); "
                "UPSNet needs the standard panoptic registration (register_coco_panoptic)"
            )
        return cls(tuple(things), tuple(stuff))

    @classmethod
    def from_dataset(cls, name: str) -> "PanopticLabelSpace":
        """From the metadata of the registered panoptic dataset ``name`` (LazyConfig helper)."""
        from detectron2.data import MetadataCatalog

        return cls.from_metadata(MetadataCatalog.get(name), name)

    @classmethod
    def from_config(cls, cfg) -> "PanopticLabelSpace":
        """From the metadata of ``cfg.DATASETS.TRAIN[0]`` if it is a registered panoptic dataset,
        else :meth:`identity`; checked against ROI_HEADS.NUM_CLASSES / UPSNET.NUM_STUFF_CLASSES."""
        from detectron2.data import DatasetCatalog, MetadataCatalog

        num_things, num_stuff = cfg.MODEL.ROI_HEADS.NUM_CLASSES, cfg.MODEL.UPSNET.NUM_STUFF_CLASSES
        names = [n for n in cfg.DATASETS.TRAIN if n in DatasetCatalog.list()]
        meta = MetadataCatalog.get(names[0]) if names else None
        if meta is None or not hasattr(meta, "stuff_dataset_id_to_contiguous_id"):
            return cls.identity(num_things, num_stuff)
        space = cls.from_metadata(meta, names[0])
        if (space.num_things, space.num_stuff) != (num_things, num_stuff):
            raise ValueError(
                f"dataset {names[0]!r} has {space.num_things} thing and {space.num_stuff} stuff "
                f"classes but MODEL.ROI_HEADS.NUM_CLASSES={num_things} and "
                f"MODEL.UPSNET.NUM_STUFF_CLASSES={num_stuff}"
            )
        return space

    def semantic_label(self, contiguous_id: int, isthing: bool) -> int:
        """Internal semantic channel of a metadata contiguous id: s, or S + t for things."""
        ids = self.thing_ids if isthing else self.stuff_ids
        try:
            idx = list(ids).index(contiguous_id)
        except ValueError:
            kind = "thing" if isthing else "stuff"
            raise ValueError(f"unknown {kind} category (contiguous id {contiguous_id})") from None
        return self.num_stuff + idx if isthing else idx

    def joint_order(self) -> Optional[torch.Tensor]:
        """If the metadata uses one id space over all S + T classes (D2's standard panoptic
        metadata), the permutation ``p`` such that ``logits[p]`` has channel c = contiguous id c;
        None for separate id spaces."""
        ids = list(self.stuff_ids) + list(self.thing_ids)
        if sorted(ids) != list(range(len(ids))):
            return None
        perm = torch.empty(len(ids), dtype=torch.long)
        perm[torch.tensor(ids)] = torch.arange(len(ids))
        return perm

    def to_dict(self) -> Dict[str, List[int]]:
        return {"thing_ids": list(self.thing_ids), "stuff_ids": list(self.stuff_ids)}
