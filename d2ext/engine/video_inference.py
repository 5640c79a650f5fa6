"""Video evaluation through D2's ``DefaultTrainer.test``: per-clip datasets, clip by clip.

D2's ``inference_on_dataset`` hands each loader item to the model and the model's outputs to the
evaluator. On a per-clip dataset (``evaluator_type: "youtube_vis"``, :func:`is_clip_dataset`)
an item is one video, so three pieces make the loop work unchanged:

* :class:`VideoClipMapper`: the test-time mapper of a per-clip dict. Every frame goes through
  D2's ``DatasetMapper(cfg, is_train=False)`` (``read_image`` in ``INPUT.FORMAT``, the
  ``ResizeShortestEdge`` test resize), exactly as the per-frame dataset's evaluation maps it;
* :class:`VideoClipModel`: wraps a D2 model; per clip it runs the frames in order with
  :func:`d2ext.engine.video_predictor.predict_frames` (the step :class:`VideoPredictor` uses):
  a model with the video protocol (YolactEdge) gets ``init_video_state()`` at the clip's start
  and ``forward_video`` frame by frame, any other model runs the frames in batches; track ids by
  a :class:`Tracker` reset per clip unless the model sets ``pred_track_ids``. It returns per
  clip ``{"tracks": instances_to_tracks(...), "frames": [per-frame output dicts]}``;
* the evaluators (``d2ext.evaluation.build``): :class:`VideoAPEvaluator` reads ``"tracks"``
  (``"segm_vis"``: YouTube-VIS AP), and :class:`ClipFramesEvaluator` hands ``"frames"`` to the
  per-frame dataset's COCO evaluator (``"bbox"``, ``"segm"``), so the per-frame AP is that of the
  frames as the video schedule produced them (keyframes every k, the rest warped).

``d2ext.engine.Trainer`` uses them for per-clip datasets in ``DATASETS.TEST``::

    python tools/train_net.py --config-file configs/YolactEdge/yolact_edge_R_18_synth_joint.yaml \\
        --eval-only MODEL.WEIGHTS m.pth DATASETS.TEST '("synth_videos_val_clips",)'
"""

from typing import Callable, Dict, List, Optional

import torch
from detectron2.config import configurable
from detectron2.data import DatasetMapper, MetadataCatalog
from detectron2.data.detection_utils import SizeMismatchError
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from d2ext.evaluation.clip_frames import ClipFramesEvaluator
from d2ext.evaluation.video_ap import instances_to_tracks
from d2ext.modeling.common.tracking import Tracker

from .video_predictor import has_video_state, predict_frames

__all__ = [
    "CLIP_EVALUATOR_TYPES",
    "ClipFramesEvaluator",
    "VideoClipMapper",
    "VideoClipModel",
    "is_clip_dataset",
]

# ``evaluator_type``s of datasets whose dicts are whole videos (``d2ext.data.youtube_vis``)
CLIP_EVALUATOR_TYPES = ("youtube_vis",)
# the keys of a frame's model input kept by VideoClipMapper
FRAME_INPUT_KEYS = ("image", "height", "width", "frame_idx", "image_id", "file_name")


def is_clip_dataset(dataset_name: str) -> bool:
    """Whether ``dataset_name``'s dicts are per-clip (one per video), by its ``evaluator_type``."""
    return MetadataCatalog.get(dataset_name).get("evaluator_type", None) in CLIP_EVALUATOR_TYPES


class VideoClipMapper:
    """Test-time mapper of a per-clip dict (``video_id``, ``height``, ``width``, ``length``,
    ``file_names``, ``frames``: per-frame D2 dicts) -> the same clip whose ``frames`` are the
    frames' model inputs ``{"image" (3, h, w) uint8 tensor resized as D2's test mapper, "height",
    "width" (the video's size: predictions come back at it), "frame_idx", "image_id",
    "file_name"}``.

    A frame that cannot be read is an ``OSError``, a frame whose size is not the video's a
    ``ValueError``, both naming the video id, the frame index and its file.
    """

    @configurable
    def __init__(self, *, frame_mapper: Callable[[Dict], Dict]):
        """
        Args:
            frame_mapper: maps one frame's D2 dict to its model input; checks the image size
                against the dict's ``height`` / ``width`` (D2's ``DatasetMapper`` in test mode).
        """
        self.frame_mapper = frame_mapper

    @classmethod
    def from_config(cls, cfg):
        return {"frame_mapper": DatasetMapper(cfg, is_train=False)}

    def __call__(self, clip: Dict) -> Dict:
        video = clip.get("video_id", "?")
        frames = clip.get("frames")
        if not frames:
            raise ValueError(f"video_id={video!r}: the per-clip dict has no frames")
        if clip.get("length", len(frames)) != len(frames):
            raise ValueError(
                f"video_id={video!r}: 'length' is {clip['length']} but 'frames' has {len(frames)}"
            )
        height, width = clip["height"], clip["width"]
        inputs = []
        for t, frame in enumerate(frames):
            where = f"video_id={video!r}, frame {t} ({frame.get('file_name')})"
            try:
                # the video's size, so that DatasetMapper checks the frame against it
                mapped = self.frame_mapper({**frame, "height": height, "width": width})
            except SizeMismatchError as e:
                raise ValueError(
                    f"{where}: the frame's size is not the video's {height}x{width} (HxW): {e}"
                ) from e
            except OSError as e:  # missing, corrupt or truncated (PIL's errors are OSErrors)
                raise OSError(f"{where}: cannot read the frame: {type(e).__name__}: {e}") from e
            mapped["frame_idx"] = t
            inputs.append({k: mapped[k] for k in FRAME_INPUT_KEYS if k in mapped})
        return {**{k: v for k, v in clip.items() if k != "frames"}, "frames": inputs}


class VideoClipModel(nn.Module):
    """A D2 model run on whole clips (inputs from :class:`VideoClipMapper`), for
    ``inference_on_dataset``: ``forward(clips) -> [{"tracks", "frames"} per clip]``.

    ``"frames"``: one output dict per frame, the model's own (``"instances"`` at the video's size
    with ``pred_track_ids``, moved to the CPU: a clip's masks would otherwise pile up on the
    device; YolactEdge adds ``"is_keyframe"``). ``"tracks"``: :func:`instances_to_tracks` of
    them, :class:`VideoAPEvaluator`'s format.

    Args:
        model: a D2 model (a DDP-wrapped one is unwrapped: clips differ in length per process,
            and inference needs no gradient synchronisation). With the video protocol
            (``init_video_state`` / ``forward_video``) its state is started per clip and carried
            frame by frame; any other model runs ``batch_size`` frames per forward.
        batch_size: frames per forward of a model without video state. 1 (default) gives the
            per-frame predictions of D2's per-image evaluation bit for bit; larger batches of
            one video's frames need no padding and are faster on a GPU, but may move scores by
            float rounding.
        tracker: the track-id assignment, :meth:`Tracker.reset` at every clip (default
            ``Tracker()``, as :class:`VideoPredictor`).
    """

    def __init__(self, model: nn.Module, *, batch_size: int = 1, tracker: Optional[Tracker] = None):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"VideoClipModel: batch_size must be >= 1, got {batch_size}")
        if isinstance(model, DistributedDataParallel):
            model = model.module
        self.model = model
        self.batch_size = batch_size
        self.tracker = tracker if tracker is not None else Tracker()
        # inference_context(wrapper) puts the wrapper back in its mode after inference, and with
        # it the model: start in the model's mode so that the model ends in its own
        self.train(model.training)

    @property
    def stateful(self) -> bool:
        return has_video_state(self.model)

    def forward(self, clips: List[Dict]) -> List[Dict]:
        return [self.predict_clip(clip) for clip in clips]

    @torch.no_grad()
    def predict_clip(self, clip: Dict) -> Dict:
        """One clip's ``{"tracks", "frames"}`` (see the class doc)."""
        video = clip.get("video_id", "?")
        who = f"VideoClipModel (video_id={video!r})"
        frames = clip["frames"]
        step = 1 if self.stateful else self.batch_size
        state = self.model.init_video_state() if self.stateful else None
        self.tracker.reset()
        outputs = []
        for start in range(0, len(frames), step):
            batch = frames[start : start + step]
            batch_outputs, state = predict_frames(self.model, batch, state, self.tracker, who=who)
            outputs += [{**out, "instances": out["instances"].to("cpu")} for out in batch_outputs]
        try:
            tracks = instances_to_tracks([out["instances"] for out in outputs])
        except ValueError as e:
            raise ValueError(f"{who}: {e}") from e
        return {"tracks": tracks, "frames": outputs}
