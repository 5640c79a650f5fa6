"""Train-time mapper of VPSNet: a frame of a per-frame panoptic video dataset (the
``cityscapes_vps`` loader's dicts: ``video_id``, ``frame_idx``, ``file_name``,
``pan_seg_file_name``, ``segments_info``) with a reference frame of the same video, both mapped
as :class:`UPSNetPanopticMapper` maps an image, under the same augmentation.

Reference frame (mcahny/vps @ 138503e, ``mmdet/datasets/cityscapes_vps.py``,
``prepare_train_img`` 82-132): an offset drawn uniformly from
``MODEL.VPSNET.REFERENCE_OFFSETS`` ([-1, 1]: the previous or next annotated frame); an offset
that leaves the video is dropped and the draw repeated among the rest, so the first frame
pairs with the second and the last with the one before. A video of one frame pairs the frame
with itself (the original skips such a sample).

Augmentation: the target frame's transforms (resize, flip, crop) are recorded
(:class:`d2ext.data.mappers.video_pairs` records them the same way for YolactEdge) and replayed
on the reference frame and its panoptic PNG. Track ids are the panoptic segment ids of the
things (stable over a Cityscapes-VPS video), ``instances.gt_track_ids`` in instance order.
"""

import copy
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetCatalog
from detectron2.data import transforms as T

from ..build import MAPPER_REGISTRY
from .upsnet_panoptic import UPSNetPanopticMapper
from .video_pairs import _RecordingAugmentationList

__all__ = ["VPSNetPairMapper"]


class _PanopticRecordingList(_RecordingAugmentationList):
    """Also keeps the transformed panoptic id map of its latest call (the track ids need it)."""

    last_sem_seg = None

    def __call__(self, aug_input) -> T.TransformList:
        transforms = super().__call__(aug_input)
        self.last_sem_seg = aug_input.sem_seg
        return transforms


class _ReplayTransforms(T.Augmentation):
    """Applies the transforms recorded on the target frame to an image of the same size."""

    def __init__(self):
        super().__init__()
        self.transforms: Optional[T.TransformList] = None
        self.size = None
        self.target = ""

    def get_transform(self, image) -> T.TransformList:
        if tuple(image.shape[:2]) != self.size:
            raise ValueError(
                f"reference frame is {image.shape[1]}x{image.shape[0]} but frame "
                f"{self.target!r} of the same video is {self.size[1]}x{self.size[0]} (WxH): "
                "the frame size changes mid-video"
            )
        return self.transforms


def _thing_track_ids(segments_info: List[Dict], pan: np.ndarray) -> torch.Tensor:
    """Ids of the segments :class:`UPSNetPanopticMapper` made instances, in its order: the
    non-crowd things still present after the augmentation."""
    ids = [
        int(s["id"])
        for s in segments_info
        if s["isthing"] and not s.get("iscrowd", 0) and (pan == s["id"]).any()
    ]
    return torch.tensor(ids, dtype=torch.int64)


@MAPPER_REGISTRY.register()
class VPSNetPairMapper(UPSNetPanopticMapper):
    """``INPUT.DATASET_MAPPER_NAME: VPSNetPairMapper``. Output (training):
    :class:`UPSNetPanopticMapper`'s dict of the frame, its instances with ``gt_track_ids`` (K,)
    int64, plus ``"reference"``: the same dict for the reference frame (same transforms). At test
    time it maps as :class:`UPSNetPanopticMapper` (the image alone)."""

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        dataset_names: Sequence[str] = (),
        frames: Optional[Sequence[Dict]] = None,
        reference_offsets: Sequence[int] = (-1, 1),
        **kwargs,
    ):
        """
        Args:
            dataset_names: the registered datasets whose frames are the references
                (``DATASETS.TRAIN``), read at the first call.
            frames: the frames' dicts themselves, instead of ``dataset_names``.
            reference_offsets: signed annotated-frame distances to the reference (module doc).
            kwargs: :class:`UPSNetPanopticMapper`'s arguments.
        """
        super().__init__(is_train, **kwargs)
        offsets = list(reference_offsets)
        if not offsets or not all(isinstance(o, (int, np.integer)) for o in offsets):
            raise ValueError(
                f"MODEL.VPSNET.REFERENCE_OFFSETS must be a non-empty list of ints, got {offsets!r}"
            )
        self.reference_offsets = [int(o) for o in offsets]
        self.dataset_names = list(dataset_names)
        self._videos = None if frames is None else _index_videos(frames, "the given frames")
        self.augmentations = _PanopticRecordingList(self.augmentations.augs)
        self._replay = _ReplayTransforms()
        self._reference_mapper = UPSNetPanopticMapper(
            is_train,
            augmentations=[self._replay],
            image_format=self.image_format,
            label_space=self.label_space,
            ignore_value=self.ignore_value,
        )
        self._reference_mapper.augmentations = _PanopticRecordingList([self._replay])

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ret = super().from_config(cfg, is_train)
        ret["dataset_names"] = list(cfg.DATASETS.TRAIN)
        ret["reference_offsets"] = list(cfg.MODEL.VPSNET.REFERENCE_OFFSETS)
        return ret

    def _reference_dict(self, d: Dict) -> Dict:
        name = d.get("file_name", "<no file_name>")
        missing = [k for k in ("video_id", "frame_idx") if k not in d]
        if missing:
            raise KeyError(
                f"{name}: VPSNetPairMapper needs the per-frame video fields {missing} (a "
                "cityscapes_vps dataset or the synth_vps builtins)"
            )
        if self._videos is None:
            dicts = [x for n in self.dataset_names for x in DatasetCatalog.get(n)]
            self._videos = _index_videos(dicts, f"datasets {self.dataset_names}")
        frames = self._videos.get(d["video_id"])
        idx = int(d["frame_idx"])
        if frames is None or idx not in frames:
            raise KeyError(
                f"{name}: video {d['video_id']!r} frame {idx} is not among the frames of "
                f"{self.dataset_names or 'the given frames'}"
            )
        offsets = list(self.reference_offsets)
        while offsets:  # the original's draw: retry without an offset that leaves the video
            offset = offsets[np.random.randint(len(offsets))]
            if idx + offset in frames:
                return frames[idx + offset]
            offsets.remove(offset)
        return frames[idx]  # a one-frame video

    def __call__(self, dataset_dict: Dict) -> Dict:
        if not self.is_train:
            return super().__call__(dataset_dict)
        reference = self._reference_dict(dataset_dict)
        out = super().__call__(dataset_dict)
        # cleared at once: photometric transforms hold closures a spawned worker cannot unpickle
        transforms, pan = self.augmentations.last_transforms, self.augmentations.last_sem_seg
        self.augmentations.last_transforms = self.augmentations.last_sem_seg = None
        out["instances"].gt_track_ids = _thing_track_ids(dataset_dict["segments_info"], pan)

        self._replay.transforms = transforms
        self._replay.size = (out["height"], out["width"])
        self._replay.target = out.get("file_name", "")
        recorder = self._reference_mapper.augmentations
        try:
            ref = self._reference_mapper(copy.copy(reference))
            ref_pan = recorder.last_sem_seg
        finally:
            self._replay.transforms = recorder.last_transforms = recorder.last_sem_seg = None
        ref["instances"].gt_track_ids = _thing_track_ids(reference["segments_info"], ref_pan)
        out["reference"] = ref
        return out


def _index_videos(dicts: Sequence[Dict], where: str) -> Dict:
    """{video_id: {frame_idx: dict}}; a repeated (video_id, frame_idx) is a ``ValueError``."""
    videos: Dict = {}
    for d in dicts:
        if "video_id" not in d or "frame_idx" not in d:
            continue  # not a video frame: its own call reports it
        frames = videos.setdefault(d["video_id"], {})
        idx = int(d["frame_idx"])
        if idx in frames:
            raise ValueError(
                f"{where}: video {d['video_id']!r} has two frames {idx} "
                f"({frames[idx].get('file_name')!r}, {d.get('file_name')!r}); video ids must be "
                "unique over DATASETS.TRAIN"
            )
        frames[idx] = d
    return videos
