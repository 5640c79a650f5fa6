"""Training and inference: :class:`Trainer` (D2's DefaultTrainer with d2ext's evaluator/mapper
dispatch), :func:`setup_cfg` (train_net's config set-up), :func:`register_cfg_datasets` and
:class:`LandmarkPredictor` (single-image inference of top-down landmark models)."""

from .predictor import LandmarkPredictor
from .trainer import Trainer, register_cfg_datasets, setup_cfg

__all__ = ["LandmarkPredictor", "Trainer", "register_cfg_datasets", "setup_cfg"]
