"""Training and inference: :class:`Trainer` (D2's DefaultTrainer with d2ext's evaluator/mapper
dispatch), :func:`setup_cfg` (train_net's config set-up), :func:`register_cfg_datasets`,
:class:`LandmarkPredictor` (single-image inference of top-down landmark models),
:class:`ExportedPredictor` (the same from an exported ONNX / TorchScript file) and
:class:`VideoPredictor` (per-frame instances with track ids, model state carried over a video),
:class:`VideoClipMapper` / :class:`VideoClipModel` (D2's ``inference_on_dataset`` over per-clip
datasets, one whole clip per input, the model's video state carried within it)."""

from .exported_predictor import ExportedPredictor
from .predictor import LandmarkPredictor
from .trainer import Trainer, register_cfg_datasets, setup_cfg
from .video_inference import VideoClipMapper, VideoClipModel, is_clip_dataset
from .video_predictor import VideoPredictor

__all__ = [
    "ExportedPredictor",
    "LandmarkPredictor",
    "Trainer",
    "VideoClipMapper",
    "VideoClipModel",
    "VideoPredictor",
    "is_clip_dataset",
    "register_cfg_datasets",
    "setup_cfg",
]
