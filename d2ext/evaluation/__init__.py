"""d2ext's DatasetEvaluators and the evaluator dispatch used by ``tools/train_net.py``."""
from .build import build_evaluator

__all__ = ["build_evaluator"]
