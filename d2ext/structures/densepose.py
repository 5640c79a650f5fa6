"""DensePose ground truth of one instance (:class:`DensePoseData`) and of a set of instances
(:class:`DensePoseList`, an ``Instances`` field ``gt_densepose``).

Conventions of DensePose-COCO: point coordinates ``x``, ``y`` are in [0, 256] relative to the
instance's GT box (``x_img = x0 + x * w / 256``); ``i`` is the fine part index (1..24, 0 =
background); ``u``, ``v`` are in [0, 1]; ``segm`` is the 256 x 256 coarse part map over the GT
box (0 = background, 1..14 the ``dp_masks`` parts), absent when the annotation has no masks.
"""

from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Union

import torch

__all__ = ["DensePoseData", "DensePoseList"]


@dataclass
class DensePoseData:
    """One instance's points (all (P,)) and optional coarse part map (256, 256) uint8."""

    x: torch.Tensor
    y: torch.Tensor
    i: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor
    segm: Optional[torch.Tensor] = None

    def __post_init__(self):
        n = len(self.x)
        for name in ("y", "i", "u", "v"):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"DensePoseData: {name} has {len(getattr(self, name))} points, x has {n}"
                )
        if self.segm is not None and self.segm.dim() != 2:
            raise ValueError(f"DensePoseData: segm must be (H, W), got {tuple(self.segm.shape)}")

    def to(self, device) -> "DensePoseData":
        segm = None if self.segm is None else self.segm.to(device)
        return DensePoseData(
            self.x.to(device), self.y.to(device), self.i.to(device), self.u.to(device),
            self.v.to(device), segm,
        )  # fmt: skip


class DensePoseList:
    """``DensePoseData`` or None (an instance without DensePose annotations) per instance;
    indexable like the other ``Instances`` fields (int, slice, bool or index tensor)."""

    def __init__(self, items: Sequence[Optional[DensePoseData]]):
        self._items: List[Optional[DensePoseData]] = list(items)

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Optional[DensePoseData]]:
        return iter(self._items)

    def __getitem__(
        self, item: Union[int, slice, torch.Tensor]
    ) -> Union[Optional[DensePoseData], "DensePoseList"]:
        if isinstance(item, int):
            return self._items[item]
        if isinstance(item, slice):
            return DensePoseList(self._items[item])
        if isinstance(item, torch.Tensor):
            if item.dtype == torch.bool:
                if len(item) != len(self):
                    raise IndexError(f"DensePoseList: mask of {len(item)} for {len(self)} items")
                item = torch.nonzero(item).squeeze(1)
            return DensePoseList([self._items[int(k)] for k in item.tolist()])
        raise TypeError(f"DensePoseList: unsupported index {type(item).__name__}")

    def has_data(self) -> torch.Tensor:
        """(N,) bool: which instances carry DensePose annotations."""
        return torch.tensor([d is not None for d in self._items], dtype=torch.bool)

    def to(self, device) -> "DensePoseList":
        return DensePoseList([None if d is None else d.to(device) for d in self._items])

    @staticmethod
    def cat(lists: Sequence["DensePoseList"]) -> "DensePoseList":
        return DensePoseList([d for lst in lists for d in lst])

    def __repr__(self) -> str:
        return f"DensePoseList(num_instances={len(self)}, with_data={int(self.has_data().sum())})"
