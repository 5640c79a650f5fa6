"""Training: :class:`Trainer` (D2's DefaultTrainer with d2ext's evaluator/mapper dispatch),
:func:`setup_cfg` (train_net's config set-up) and :func:`register_cfg_datasets`."""

from .trainer import Trainer, register_cfg_datasets, setup_cfg

__all__ = ["Trainer", "register_cfg_datasets", "setup_cfg"]
