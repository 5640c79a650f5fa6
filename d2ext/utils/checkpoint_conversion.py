"""Reading an original implementation's checkpoint and writing its conversion as a D2
checkpoint: what every ``tools/convert_*_weights.py`` shares."""

import os
import pickle
from typing import Dict, Sequence

import torch

__all__ = ["load_official_state_dict", "save_converted_checkpoint"]


def load_official_state_dict(
    src: str,
    what: str,
    wrapper_keys: Sequence[str] = ("state_dict", "model", "net"),
    tensors_only: bool = True,
) -> Dict:
    """The state dict inside ``src``: bare, or under the first of ``wrapper_keys`` that holds a
    dict. ``.pkl`` files are read as pickles (D2's model zoo), others with ``torch.load``.

    Args:
        what: names the checkpoint in errors (e.g. "official YOLACT").
        tensors_only: every value must be a tensor (``.pkl`` files hold numpy arrays).
    """
    if not os.path.isfile(src):
        raise FileNotFoundError(f"{what} checkpoint {src!r} does not exist")
    if src.endswith(".pkl"):
        with open(src, "rb") as f:
            ckpt = pickle.load(f, encoding="latin1")
    else:
        ckpt = torch.load(src, map_location="cpu", weights_only=False)
    for key in wrapper_keys:
        if isinstance(ckpt, dict) and isinstance(ckpt.get(key), dict):
            ckpt = ckpt[key]
            break
    valid = isinstance(ckpt, dict) and bool(ckpt)
    if valid and tensors_only:
        valid = all(torch.is_tensor(v) for v in ckpt.values())
    if not valid:
        kind = "a dict of tensors" if tensors_only else "a state dict"
        raise ValueError(f"{src!r} is not a {what} state dict (expected {kind})")
    return ckpt


def save_converted_checkpoint(dst: str, state_dict: Dict, author: str) -> None:
    """``{"model": state_dict, "__author__": author, "matching_heuristics": False}``: D2's
    ``DetectionCheckpointer`` format with exact key names."""
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    torch.save({"model": state_dict, "__author__": author, "matching_heuristics": False}, dst)
