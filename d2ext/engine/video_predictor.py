"""Video inference: frames in, D2 ``Instances`` with track ids out, one video at a time.

:class:`VideoPredictor` is D2's ``DefaultPredictor`` for videos: the same model building
(eval mode, ``MODEL.WEIGHTS``) and pre-processing (``INPUT.FORMAT`` channel order, the
``ResizeShortestEdge`` test resize, predictions at the frame's own size), plus

* model state carried across the frames of a video. A model with the video protocol

  - ``init_video_state() -> state``: the state before a video's first frame (any object);
  - ``forward_video(batched_inputs, state) -> (outputs, state)``: ``batched_inputs`` are the
    D2 dicts of consecutive frames (one per call here), ``outputs`` one D2 output dict each;

  (YolactEdge: the keyframe's features) gets its state threaded through; any other D2 model
  runs on each frame by itself, several frames per forward with ``run(frames, batch_size)``;
* track ids (``pred_track_ids``) from :class:`d2ext.modeling.common.Tracker` (mask IoU to the
  previous frames), unless the model sets ``pred_track_ids`` itself (a model with a track head).

A video's frames must all have one size: a frame of another size is a ``ValueError`` (naming
the frame) until :meth:`VideoPredictor.reset` starts a new video. Silently starting over would
restart the track ids and the model's state mid-video, which a caller should decide on.
"""

from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.engine import DefaultPredictor
from detectron2.structures import Instances

from d2ext.modeling.common.tracking import Tracker

from .predictor import image_in_format

__all__ = ["VideoPredictor", "has_video_state", "predict_frames"]


def has_video_state(model: torch.nn.Module) -> bool:
    """Whether ``model`` follows the video protocol (``init_video_state`` + ``forward_video``)."""
    return callable(getattr(model, "init_video_state", None)) and callable(
        getattr(model, "forward_video", None)
    )


@torch.no_grad()
def predict_frames(
    model: torch.nn.Module, frames: List[Dict], state: Any, tracker: Tracker, *, who: str
) -> Tuple[List[Dict], Any]:
    """One forward over consecutive frames of one video, then their track ids: the step that
    :class:`VideoPredictor` and :mod:`d2ext.engine.video_inference` (video evaluation) share.

    Args:
        model: a D2 model in eval mode (not DDP-wrapped). With the video protocol
            (:func:`has_video_state`) the frames go through ``forward_video`` with ``state``
            threaded through; any other model gets them as one batch.
        frames: D2 input dicts of consecutive frames (``"image"``, ``"height"``, ``"width"``,
            ``"frame_idx"``), in order.
        state: the model's video state before ``frames`` (None for a model without it).
        tracker: the video's :class:`Tracker`; sets ``pred_track_ids`` on each frame's
            ``instances`` unless the model set them itself (a model with a track head).
        who: names the caller in errors.

    Returns:
        (one output dict per frame, with ``"instances"``; the state after the frames).
    """
    if has_video_state(model):
        outputs, state = model.forward_video(frames, state)
    else:
        outputs = model(frames)
    if len(outputs) != len(frames):
        raise ValueError(
            f"{who}: {type(model).__name__} returned {len(outputs)} outputs for {len(frames)} "
            f"frames"
        )
    for x, out in zip(frames, outputs):
        if "instances" not in out:
            raise ValueError(
                f"{who} needs instance predictions; {type(model).__name__} returned "
                f"{sorted(out)} for frame {x['frame_idx']}"
            )
        if not out["instances"].has("pred_track_ids"):
            tracker.update(out["instances"])
    return outputs, state


class VideoPredictor:
    """``VideoPredictor(cfg)``: per-frame ``Instances`` with ``pred_track_ids`` for one video at
    a time; :meth:`reset` between videos.

    Example::

        predictor = VideoPredictor(cfg)
        for frame in frames_of_video_1:             # (H, W, 3) uint8 BGR, as cv2 reads them
            instances = predictor(frame)            # pred_boxes, scores, pred_classes,
            instances.pred_track_ids                # pred_masks, pred_track_ids (N,) int64
        predictor.reset()
        for instances in predictor.run(frames_of_video_2, batch_size=4):
            ...

    Args:
        cfg: the model's config (``MODEL.WEIGHTS``, ``INPUT.FORMAT``, ``INPUT.MIN_SIZE_TEST`` /
            ``MAX_SIZE_TEST``; ``DATASETS.TEST[0]`` names ``metadata``).
        tracker: the track-id assignment (default ``Tracker()``: Hungarian on mask IoU >= 0.3,
            same class, tracks kept 3 missed frames).
    """

    def __init__(self, cfg: CfgNode, *, tracker: Optional[Tracker] = None):
        # D2's own set-up: build_model, eval(), checkpoint load, metadata, the test resize
        predictor = DefaultPredictor(cfg)
        self.cfg = predictor.cfg
        self.model = predictor.model
        self.aug = predictor.aug
        self.input_format = predictor.input_format
        self.metadata = getattr(predictor, "metadata", None)
        self.stateful = has_video_state(self.model)
        self.tracker = tracker if tracker is not None else Tracker()
        self.reset()

    def reset(self) -> None:
        """Start a new video: the model's initial state, no tracks, any frame size."""
        self.state = self.model.init_video_state() if self.stateful else None
        self.tracker.reset()
        self.frame_index = 0  # frames of the current video given so far
        self._frame_size: Optional[Tuple[int, int]] = None
        # the whole output dict of the frame last yielded ("panoptic_seg" of video panoptic
        # models, whose thing segments carry the track ids), None before the first
        self.last_output: Optional[Dict] = None

    def __call__(self, frame: np.ndarray) -> Instances:
        """The next frame of the current video ((H, W, 3) uint8 BGR, or (H, W) grayscale) ->
        its ``Instances`` at H x W, with ``pred_track_ids``."""
        return next(self.run([frame]))

    def run(self, frames: Iterable[np.ndarray], batch_size: int = 1) -> Iterator[Instances]:
        """Yield the ``Instances`` of each of ``frames`` (any iterable, read lazily: a list,
        a generator over a video file) in order, continuing the current video.

        Args:
            batch_size: frames per forward for models without video state (the frames of a
                video share one size, so they batch without padding waste); a stateful model
                takes one frame per ``forward_video`` call whatever it is.
        """
        if batch_size < 1:
            raise ValueError(f"VideoPredictor.run: batch_size must be >= 1, got {batch_size}")
        step = 1 if self.stateful else batch_size
        batch: List[Dict] = []
        for frame in frames:
            try:
                inputs = self._prepare(frame)
            except ValueError:
                yield from self._predict(batch)  # the frames before the bad one are good
                raise
            batch.append(inputs)
            if len(batch) == step:
                yield from self._predict(batch)
                batch = []
        yield from self._predict(batch)

    def _prepare(self, frame: np.ndarray) -> Dict:
        """The model's input dict of the next frame (``DefaultPredictor``'s pre-processing)."""
        who = f"VideoPredictor (frame {self.frame_index})"
        image = image_in_format(frame, self.input_format, who)
        height, width = image.shape[:2]
        if self._frame_size is not None and (height, width) != self._frame_size:
            h0, w0 = self._frame_size
            raise ValueError(
                f"{who}: the frame is {height}x{width} but the video's frames so far are "
                f"{h0}x{w0}; call reset() to start a new video"
            )
        self._frame_size = (height, width)
        image = self.aug.get_transform(image).apply_image(image)
        tensor = torch.as_tensor(image.astype("float32").transpose(2, 0, 1))
        inputs = {"image": tensor, "height": height, "width": width, "frame_idx": self.frame_index}
        self.frame_index += 1
        return inputs

    def _predict(self, batch: List[Dict]) -> Iterator[Instances]:
        if not batch:
            return
        outputs, self.state = predict_frames(
            self.model, batch, self.state, self.tracker, who="VideoPredictor"
        )
        for out in outputs:
            self.last_output = out
            yield out["instances"]
