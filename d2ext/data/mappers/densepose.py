"""Train-time mapper for DensePose: D2's DatasetMapper plus the DensePose ground truth of each
instance (``gt_densepose``, a :class:`~d2ext.structures.DensePoseList`).

Each annotation's ``dp_*`` keys (``d2ext.data.densepose_coco``) give points relative to its box
and a 256 x 256 coarse part map over it. After the image transforms:

* points are mapped through the transforms in image coordinates and expressed relative to the
  instance's final box (D2's transformed box, clipped to the image): a flip gives the original's
  ``x -> 256 - x``, a resize leaves them unchanged, a crop or the clipping of a figure partly
  outside the image re-expresses them; points outside the final box ``[0, 256]`` are dropped;
* the coarse map is resampled (nearest) onto the final box, cells outside the original box 0;
* an odd number of horizontal / vertical flips mirrors the person: fine and coarse part labels
  and U / V go through the dataset's symmetry table (:mod:`d2ext.data.densepose_flip`; metadata
  ``densepose_transform_src``).

Instances without DensePose data (no points) are ``None`` in the list; ``gt_densepose`` is set on
every training image (all None when none has data). With ``MODEL.MASK_ON`` an annotation
without ``segmentation`` gets one from its ``dp_masks`` foreground (else its box), as the
original fills masks from DensePose. Rotations are not supported (the coarse map is resampled
axis-aligned).
"""

from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BoxMode

from d2ext.structures import DensePoseData, DensePoseList

from ..build import MAPPER_REGISTRY
from ..densepose_coco import annotation_to_densepose_data, decode_dp_masks
from ..densepose_flip import (
    SYNTHETIC_UV_SYMMETRY,
    UVSymmetryTable,
    flip_iuv,
    load_uv_symmetry_of_datasets,
)
from ..synthetic.annotations import mask_to_polygons

__all__ = ["DensePoseMapper", "transform_densepose"]

SIZE = 256.0
XYXY = BoxMode.XYXY_ABS


def _axis_cells(lo: float, size: float, src_lo: float, src_size: float, mirror: bool) -> np.ndarray:
    """Index in the source map (length 256 over [src_lo, src_lo + src_size)) of each of the 256
    cell centres over [lo, lo + size); -1 outside."""
    centres = lo + (np.arange(256) + 0.5) * size / SIZE
    rel = (centres - src_lo) * SIZE / src_size
    rel = SIZE - rel if mirror else rel
    idx = np.floor(rel).astype(np.int64)
    return np.where((idx >= 0) & (idx < 256), idx, -1)


def transform_densepose(
    data: DensePoseData,
    box_xyxy: Sequence[float],
    transforms: T.TransformList,
    final_box_xyxy: Sequence[float],
    table: Optional[UVSymmetryTable],
) -> Optional[DensePoseData]:
    """``data`` relative to ``box_xyxy`` (original image) -> relative to ``final_box_xyxy``
    (transformed image), as the module docstring says. None if the final box is empty."""
    for t in transforms.transforms:
        if isinstance(t, T.RotationTransform):
            raise ValueError("DensePoseMapper: rotation augmentations are not supported")
    n_hflip = sum(isinstance(t, T.HFlipTransform) for t in transforms.transforms)
    n_vflip = sum(isinstance(t, T.VFlipTransform) for t in transforms.transforms)
    x0, y0, x1, y1 = (float(c) for c in box_xyxy)
    fx0, fy0, fx1, fy1 = (float(c) for c in final_box_xyxy)
    if fx1 <= fx0 or fy1 <= fy0 or x1 <= x0 or y1 <= y0:
        return None
    xy = np.stack(
        [
            x0 + data.x.double().numpy() * (x1 - x0) / SIZE,
            y0 + data.y.double().numpy() * (y1 - y0) / SIZE,
        ],
        axis=1,
    )
    xy = transforms.apply_coords(xy.reshape(-1, 2))
    x = (xy[:, 0] - fx0) * SIZE / (fx1 - fx0)
    y = (xy[:, 1] - fy0) * SIZE / (fy1 - fy0)
    # points on the box edge land a float-rounding step outside it after a resize: kept,
    # clamped onto the edge (the original never drops points in its mapper)
    eps = 1e-3
    keep = torch.from_numpy((x >= -eps) & (x <= SIZE + eps) & (y >= -eps) & (y <= SIZE + eps))
    x, y = np.clip(x, 0, SIZE), np.clip(y, 0, SIZE)
    i, u, v = data.i, data.u, data.v
    mirror = (n_hflip + n_vflip) % 2 == 1
    if mirror:
        if table is None:
            raise ValueError(
                "DensePoseMapper: a flip mirrors DensePose parts and UV, but the dataset has no "
                "densepose_transform_src metadata: set it to the official "
                f"UV_symmetry_transforms.mat (or {SYNTHETIC_UV_SYMMETRY!r} for d2ext's synthetic "
                "figures), or turn flips off (INPUT.RANDOM_FLIP none)"
            )
        i, u, v = flip_iuv(i, u, v, table)
    segm = data.segm
    if segm is not None:
        # the original box through the transforms (axis-aligned), unclipped
        tx0, ty0, tx1, ty1 = transforms.apply_box(np.array([[x0, y0, x1, y1]]))[0]
        cols = _axis_cells(fx0, fx1 - fx0, tx0, tx1 - tx0, n_hflip % 2 == 1)
        rows = _axis_cells(fy0, fy1 - fy0, ty0, ty1 - ty0, n_vflip % 2 == 1)
        src = segm[torch.from_numpy(rows.clip(0))][:, torch.from_numpy(cols.clip(0))]
        inside = torch.from_numpy((rows >= 0)[:, None] & (cols >= 0)[None, :])
        segm = torch.where(inside, src, torch.zeros_like(src))
        if mirror:
            segm = table.mask_label_symmetries[segm.long()].to(data.segm.dtype)
    f = torch.float32
    return DensePoseData(
        torch.as_tensor(x, dtype=f)[keep], torch.as_tensor(y, dtype=f)[keep],
        i[keep], u[keep], v[keep], segm,
    )  # fmt: skip


def _mask_from_densepose(ann: Dict, image_shape) -> List[List[float]]:
    """Polygons of the ``dp_masks`` foreground pasted into the box (nearest), else the box."""
    x0, y0, x1, y1 = BoxMode.convert(list(ann["bbox"]), ann["bbox_mode"], BoxMode.XYXY_ABS)
    box_polygon = [[x0, y0, x1, y0, x1, y1, x0, y1]]
    if not ann.get("dp_masks"):
        return box_polygon
    fg = decode_dp_masks(ann["dp_masks"]).numpy() > 0
    h, w = image_shape
    rows = np.arange(max(int(np.floor(y0)), 0), min(int(np.ceil(y1)), h))
    cols = np.arange(max(int(np.floor(x0)), 0), min(int(np.ceil(x1)), w))
    r = np.floor((rows + 0.5 - y0) * SIZE / max(y1 - y0, 1e-6)).astype(np.int64)
    c = np.floor((cols + 0.5 - x0) * SIZE / max(x1 - x0, 1e-6)).astype(np.int64)
    mask = np.zeros((h, w), bool)
    ok_r, ok_c = (r >= 0) & (r < 256), (c >= 0) & (c < 256)
    mask[np.ix_(rows[ok_r], cols[ok_c])] = fg[np.ix_(r[ok_r], c[ok_c])]
    return mask_to_polygons(mask) or box_polygon


@MAPPER_REGISTRY.register()
class DensePoseMapper(DatasetMapper):
    """``INPUT.DATASET_MAPPER_NAME: DensePoseMapper``: D2's DatasetMapper (same augmentations
    and fields: ``gt_boxes``, ``gt_classes``, ``gt_masks`` with ``MASK_ON``) plus
    ``instances.gt_densepose`` at training. At test time it is D2's DatasetMapper."""

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        uv_symmetry: Optional[UVSymmetryTable] = None,
        **kwargs,
    ):
        """
        Args:
            uv_symmetry: the part / UV symmetry table for flips; None: mirroring an image
                with DensePose data is an error naming the missing metadata.
            kwargs: arguments of D2's ``DatasetMapper``.
        """
        super().__init__(is_train, **kwargs)
        self.uv_symmetry = uv_symmetry

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ret = super().from_config(cfg, is_train)
        names = cfg.DATASETS.TRAIN if is_train else cfg.DATASETS.TEST
        ret["uv_symmetry"] = load_uv_symmetry_of_datasets(names)
        return ret

    def _transform_annotations(self, dataset_dict, transforms, image_shape):
        objs = [a for a in dataset_dict.pop("annotations") if a.get("iscrowd", 0) == 0]
        orig_shape = (dataset_dict["height"], dataset_dict["width"])
        for anno in objs:
            if not self.use_instance_mask:
                anno.pop("segmentation", None)
            elif "segmentation" not in anno:
                anno["segmentation"] = _mask_from_densepose(anno, orig_shape)
            if not self.use_keypoint:
                anno.pop("keypoints", None)
        # DensePose data relative to the original boxes, before D2 transforms the boxes
        originals = [
            (
                annotation_to_densepose_data(a),
                BoxMode.convert(list(a["bbox"]), a["bbox_mode"], XYXY),
            )
            for a in objs
        ]
        annos = [
            utils.transform_instance_annotations(
                obj, transforms, image_shape, keypoint_hflip_indices=self.keypoint_hflip_indices
            )
            for obj in objs
        ]
        instances = utils.annotations_to_instances(
            annos, image_shape, mask_format=self.instance_mask_format
        )
        if self.recompute_boxes:
            instances.gt_boxes = instances.gt_masks.get_bounding_boxes()
        final_boxes = instances.gt_boxes.tensor.tolist()
        instances.gt_densepose = DensePoseList(
            [
                None
                if data is None
                else transform_densepose(data, box, transforms, final, self.uv_symmetry)
                for (data, box), final in zip(originals, final_boxes)
            ]
        )
        dataset_dict["instances"] = utils.filter_empty_instances(instances)
