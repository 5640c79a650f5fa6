"""Train-time mapper for YolactEdge's temporal stages: a video frame with its ground truth, plus
its key (reference) frame under the same augmentation, and the exact ground-truth flow between
them where the dataset has it.

Pairing (the original's ``YoutubeVIS.pull_video`` with ``use_all_frames``, ``images_per_video=1``):

* ``frame_offset`` o is drawn uniformly from ``MODEL.YOLACT_EDGE.FRAME_OFFSETS`` and the key
  frame is ``video_frames[frame_idx - o]``: o > 0 puts it *before* the current frame (the video
  stage, ``frame_offset_lb..ub = 2..5`` with ``all_frame_direction='forward'``: "forward warping
  needs to sample a previous frame"), o < 0 after it (the flow stage below).
* Only offsets whose key frame lies inside the video are drawn. The original caps its offset
  range at the distance to the video's first frame (``lb = max(first - fidx, -ub)``); where no
  offset fits (the first frames, a one-frame video), the key frame is clamped to the video's
  first (o > 0) or last (o < 0) frame, so frame 0 of the video stage and every frame of a
  one-frame video pair with themselves at offset 0. (The original never draws its first
  annotated frame as the current one and would crash on a one-frame video.)
* The current frame is mapped exactly as :class:`YOLACTDatasetMapper` maps an image, and the
  same D2 transforms are then applied to the key frame: the original draws the seeds of every
  step of ``SSDAugmentationVideo`` (photometric distortion included) on the annotated frame and
  replays them on the reference frame, which has no ground truth. The original drops frames
  without objects by resampling; D2's ``DATALOADER.FILTER_EMPTY_ANNOTATIONS`` does it here, and
  an empty frame that reaches the mapper gives empty ``instances``. Two differences in the
  original's recipes that need config, not this mapper: its video config turns the zoom-out off
  (``augment_expand False``; ``MODEL.YOLACT.SSD_AUGMENTATION`` switches all three SSD steps),
  and its flow stage (FlyingChairs) only resizes (``SSD_AUGMENTATION False``,
  ``INPUT.RANDOM_FLIP none``); the flow here follows any flip / resize / crop / pad exactly.

Flow direction: YolactEdge warps with ``deform_op(key_features, flow_net(current, key))``, a
backward warp whose grid lives on the *current* frame and samples the *key* frame, so its flow
at a current-frame pixel ``p`` points to where that content is in the key frame. Its flow stage
(FlyingChairs) feeds ``flow_net(img1, img2)`` against the ``img1 -> img2`` ground truth: img1
plays the current frame, img2 the key frame. The synthetic videos store the frame ``t -> t+1``
flow on frame t's grid (``flow_file`` of frame t), which is therefore *exactly* the flow of the
pair current = t, key = t + 1: ``frame_offset == -1`` (``FRAME_OFFSETS: [-1]`` for the flow
stage). Only then is ``"flow"`` given. The pair key = t - 1 (o = +1) would need the backward
flow ``t -> t-1``, which is not stored and cannot be computed exactly from the forward flows
(inverting them needs forward splatting, undefined at disocclusions), nor can longer offsets be
chained exactly; those pairs, and real YouTube-VIS (``flow_file`` None), have no ``"flow"``.
"""

from typing import Dict, Sequence

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from PIL import Image

from ..build import MAPPER_REGISTRY
from .yolact import YOLACTDatasetMapper

__all__ = ["YolactEdgePairMapper", "transform_flow"]

_VIDEO_KEYS = ("frame_idx", "length", "video_frames")
# transforms that leave pixel positions alone (photometric distortion, brightness, ...)
_PHOTOMETRIC = (T.NoOpTransform, T.ColorTransform, T.BlendTransform)


def transform_flow(flow: np.ndarray, transforms: T.TransformList) -> np.ndarray:
    """Carry a dense pixel flow through the geometric part of D2 transforms.

    Args:
        flow: (H, W, 2) float, x then y, in pixels of the image the transforms start from,
            sampled at pixel centres.
        transforms: what was applied to the images (flips, resizes, crops, pads; photometric
            transforms are skipped).
    Returns:
        (H', W', 2) float32 flow on the transformed image, in its pixels: a horizontal flip
        negates x (vertical: y), a resize resamples bilinearly at pixel centres (D2's float
        path, ``align_corners=False``) and scales x by new_w / w and y by new_h / h, a crop keeps
        the values, a pad adds zero flow (the padding is static in both frames).
    """
    flow = np.asarray(flow, dtype=np.float32)
    for t in transforms.transforms:
        if isinstance(t, _PHOTOMETRIC):
            continue
        if isinstance(t, (T.HFlipTransform, T.VFlipTransform)):
            axis, channel = (1, 0) if isinstance(t, T.HFlipTransform) else (0, 1)
            flow = np.flip(flow, axis=axis).copy()
            flow[..., channel] *= -1
        elif isinstance(t, T.ResizeTransform):
            flow = t.apply_image(np.ascontiguousarray(flow), interp=Image.BILINEAR)
            flow = flow * np.array([t.new_w / t.w, t.new_h / t.h], dtype=np.float32)
        elif isinstance(t, T.CropTransform):
            flow = t.apply_image(flow)
        elif isinstance(t, T.PadTransform):
            flow = np.pad(flow, ((t.y0, t.y1), (t.x0, t.x1), (0, 0)))
        else:
            raise ValueError(
                f"transform_flow cannot carry optical flow through {type(t).__name__}; the pair "
                "mapper supports flips, resizes, crops, pads and photometric transforms"
            )
    return np.ascontiguousarray(flow, dtype=np.float32)


class _RecordingAugmentationList(T.AugmentationList):
    """D2's AugmentationList that keeps the transforms of its latest call: the key frame gets
    exactly what :class:`YOLACTDatasetMapper` drew for the current frame."""

    last_transforms = None

    def __call__(self, aug_input) -> T.TransformList:
        self.last_transforms = super().__call__(aug_input)
        return self.last_transforms


def _read_flow(path: str, height: int, width: int, frame: str) -> np.ndarray:
    try:
        flow = np.load(path)
    except (OSError, ValueError) as e:
        raise ValueError(f"{frame}: cannot read its flow_file {path!r} ({e})") from None
    if flow.shape != (height, width, 2) or not np.issubdtype(flow.dtype, np.floating):
        raise ValueError(
            f"{frame}: flow_file {path!r} holds {flow.dtype} {flow.shape}, expected a float "
            f"(H, W, 2) = ({height}, {width}, 2) array (x then y, pixels)"
        )
    return flow


@MAPPER_REGISTRY.register()
class YolactEdgePairMapper(YOLACTDatasetMapper):
    """``INPUT.DATASET_MAPPER_NAME: YolactEdgePairMapper`` on per-frame video dicts
    (``youtube_vis`` / ``synth_videos_*``: ``frame_idx``, ``length``, ``video_frames``,
    ``flow_file``). Output: :class:`YOLACTDatasetMapper`'s (``"image"`` (3, S, S) of the current
    frame, ``"instances"`` its ground truth, ``"crowd_boxes"``) plus

    * ``"reference_image"``: the key frame, (3, S, S), same dtype, same transforms;
    * ``"reference_file_name"``: its path;
    * ``"frame_offset"`` (int): ``frame_idx`` minus the key frame's index (module doc);
    * ``"flow"`` (only for offset -1 with a ``flow_file``): (2, S, S) float32 tensor, x then y,
      in pixels of the output images: ``flow[:, y, x]`` is where the current frame's content at
      pixel (x, y) is in ``reference_image``, minus (x, y), so
      ``warp_features(reference, flow[None], flow_units="pixels")`` aligns the key frame with
      the current one (``pixel_flow_to_normalized`` gives the original's units).
    """

    @configurable
    def __init__(self, is_train: bool = True, *, frame_offsets: Sequence[int], **kwargs):
        """
        Args:
            frame_offsets: ``MODEL.YOLACT_EDGE.FRAME_OFFSETS``, signed frame distances to the key
                frame (module doc): [2, 3, 4, 5] for the video stage, [-1] for the flow stage.
            kwargs: :class:`YOLACTDatasetMapper`'s (D2 ``DatasetMapper``'s) arguments.
        """
        super().__init__(is_train, **kwargs)
        offsets = list(frame_offsets)
        if not offsets or not all(isinstance(o, (int, np.integer)) for o in offsets):
            raise ValueError(
                f"MODEL.YOLACT_EDGE.FRAME_OFFSETS must be a non-empty list of ints, got {offsets!r}"
            )
        self.frame_offsets = [int(o) for o in offsets]
        self.augmentations = _RecordingAugmentationList(self.augmentations.augs)

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ret = super().from_config(cfg, is_train)
        ret["frame_offsets"] = list(cfg.MODEL.YOLACT_EDGE.FRAME_OFFSETS)
        return ret

    def _draw_offset(self, frame_idx: int, length: int) -> int:
        """A uniform draw among the offsets whose key frame is in the video, else one offset
        clamped to the video (module doc); uses NumPy's global RNG, as D2's augmentations."""
        inside = [o for o in self.frame_offsets if 0 <= frame_idx - o < length]
        if inside:
            return inside[np.random.randint(len(inside))]
        offset = self.frame_offsets[np.random.randint(len(self.frame_offsets))]
        return frame_idx - min(max(frame_idx - offset, 0), length - 1)

    def _check_video_fields(self, dataset_dict: Dict) -> None:
        name = dataset_dict.get("file_name", "<no file_name>")
        missing = [k for k in _VIDEO_KEYS if k not in dataset_dict]
        if missing:
            raise KeyError(
                f"{name}: YolactEdgePairMapper needs the per-frame video fields {missing} "
                "(datasets from d2ext.data.youtube_vis or the synth_videos builtins)"
            )
        idx, length, frames = (dataset_dict[k] for k in _VIDEO_KEYS)
        if len(frames) != length or not 0 <= idx < length:
            raise ValueError(
                f"{name}: frame_idx {idx} and length {length} do not fit video_frames "
                f"({len(frames)} paths) of video {dataset_dict.get('video_id', '?')}"
            )

    def __call__(self, dataset_dict: Dict) -> Dict:
        self._check_video_fields(dataset_dict)
        idx, length = int(dataset_dict["frame_idx"]), int(dataset_dict["length"])
        offset = self._draw_offset(idx, length)
        reference_file = dataset_dict["video_frames"][idx - offset]

        out = super().__call__(dataset_dict)
        # cleared again at once: the photometric transforms hold closures a spawned worker
        # could not unpickle
        transforms, self.augmentations.last_transforms = self.augmentations.last_transforms, None

        reference = utils.read_image(reference_file, format=self.image_format)
        h, w = out["height"], out["width"]  # the current frame's, set by check_image_size
        if reference.shape[:2] != (h, w):
            raise ValueError(
                f"key frame {reference_file!r} is {reference.shape[1]}x{reference.shape[0]} but "
                f"frame {out['file_name']!r} of the same video is {w}x{h} (WxH): the "
                "frame size changes mid-video"
            )
        reference = transforms.apply_image(reference)
        out["reference_image"] = torch.as_tensor(np.ascontiguousarray(reference.transpose(2, 0, 1)))
        out["reference_file_name"] = reference_file
        out["frame_offset"] = offset
        flow_file = dataset_dict.get("flow_file")
        if offset == -1 and flow_file is not None:
            flow = _read_flow(flow_file, h, w, out["file_name"])
            flow = transform_flow(flow, transforms).transpose(2, 0, 1)
            out["flow"] = torch.from_numpy(np.ascontiguousarray(flow))
        return out
