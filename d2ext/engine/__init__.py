"""Training: :class:`Trainer` (D2's DefaultTrainer with d2ext's evaluator/mapper dispatch)."""
from .trainer import Trainer, setup_cfg

__all__ = ["Trainer", "setup_cfg"]
