"""Training and inference: :class:`Trainer` (D2's DefaultTrainer with d2ext's evaluator/mapper
dispatch), :func:`setup_cfg` (train_net's config set-up), :func:`register_cfg_datasets`,
:class:`LandmarkPredictor` (single-image inference of top-down landmark models),
:class:`ExportedPredictor` (the same from an exported ONNX / TorchScript file) and
:class:`VideoPredictor` (per-frame instances with track ids, model state carried over a video)."""

from .exported_predictor import ExportedPredictor
from .predictor import LandmarkPredictor
from .trainer import Trainer, register_cfg_datasets, setup_cfg
from .video_predictor import VideoPredictor

__all__ = [
    "ExportedPredictor",
    "LandmarkPredictor",
    "Trainer",
    "VideoPredictor",
    "register_cfg_datasets",
    "setup_cfg",
]
