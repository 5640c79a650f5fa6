"""Map princeton-vl/pytorch_stacked_hourglass checkpoints (``PoseNet``) onto
:class:`StackedHourglass` parameter names.

The original's ``train.py`` saves ``{"state_dict": ..., "optimizer": ..., "epoch": ...}`` of its
``Trainer`` wrapper around ``DataParallel(PoseNet)``, so keys read ``model.module.pre.0...``;
those wrapper prefixes are stripped. Official -> d2ext, per module:

=========================================  ============================================
``pre.0.conv`` / ``pre.0.bn``              ``stem.conv1`` / ``stem.conv1.norm``
``pre.1`` / ``pre.3`` / ``pre.4``          ``stem.res1`` / ``stem.res2`` / ``stem.res3``
``hgs.{i}.0``                              ``stacks.{i}.hourglass``
 ``up1`` / ``low1`` / ``low2`` / ``low3``   ``skip`` / ``down`` / ``inner`` / ``up``
``features.{i}.0``                         ``stacks.{i}.residual``
``features.{i}.1.conv`` / ``.bn``          ``stacks.{i}.feature`` / ``stacks.{i}.feature.norm``
``outs.{i}.conv``                          ``stacks.{i}.predictor``
``merge_features.{i}.conv.conv``           ``stacks.{i}.merge_features``
``merge_preds.{i}.conv.conv``              ``stacks.{i}.merge_preds``
residual ``bn{1,2,3}``                     ``bn{1,2,3}``
residual ``conv{1,2,3}.conv``              ``conv{1,2,3}``
residual ``skip_layer.conv``               ``shortcut``
=========================================  ============================================

(``pre.2`` is the parameter-free max-pool.) BatchNorm buffers, ``num_batches_tracked``
included, are kept: the backbone's default norm is ``nn.BatchNorm2d`` like the original's.
"""

import re
from typing import Dict, Tuple

import torch

__all__ = ["convert_official_hourglass_state_dict", "infer_official_hourglass_config"]

_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_CONV = r"(weight|bias)"
_STEM_RES = {"1": "res1", "3": "res2", "4": "res3"}
_HOURGLASS = {"up1": "skip", "low1": "down", "low2": "inner", "low3": "up"}
_MERGES = ("merge_features", "merge_preds")


def _strip_wrappers(key: str) -> str:
    # Trainer(...).model and DataParallel(...).module, in any order and number
    while key.startswith(("module.", "model.")):
        key = key.split(".", 1)[1]
    return key


def _first_match(rules, key: str) -> str:
    """The d2ext name of ``key`` from the first ``(pattern, name)`` rule whose pattern matches
    it whole (``name`` maps the match to the name)."""
    for pattern, name in rules:
        m = re.fullmatch(pattern, key)
        if m:
            return name(m)
    raise KeyError(key)


_RESIDUAL_RULES = (
    (rf"bn[123]\.{_BN}", lambda m: m.group(0)),
    (rf"conv([123])\.conv\.{_CONV}", lambda m: f"conv{m.group(1)}.{m.group(2)}"),
    (rf"skip_layer\.conv\.{_CONV}", lambda m: f"shortcut.{m.group(1)}"),
)


def _map_residual(rest: str) -> str:
    return _first_match(_RESIDUAL_RULES, rest)


def _map_hourglass(rest: str) -> str:
    parts = []
    while True:
        head, _, tail = rest.partition(".")
        if head not in _HOURGLASS or not tail:
            break
        parts.append(_HOURGLASS[head])
        rest = tail
        if head != "low2":  # up1 / low1 / low3 are residuals
            break
    if not parts:
        raise KeyError(rest)
    return ".".join(parts + [_map_residual(rest)])


_KEY_RULES = (
    (rf"pre\.0\.conv\.{_CONV}", lambda m: f"stem.conv1.{m.group(1)}"),
    (rf"pre\.0\.bn\.{_BN}", lambda m: f"stem.conv1.norm.{m.group(1)}"),
    (
        r"pre\.([134])\.(.+)",
        lambda m: f"stem.{_STEM_RES[m.group(1)]}.{_map_residual(m.group(2))}",
    ),
    (
        r"hgs\.(\d+)\.0\.(.+)",
        lambda m: f"stacks.{m.group(1)}.hourglass.{_map_hourglass(m.group(2))}",
    ),
    (
        r"features\.(\d+)\.0\.(.+)",
        lambda m: f"stacks.{m.group(1)}.residual.{_map_residual(m.group(2))}",
    ),
    (
        rf"features\.(\d+)\.1\.conv\.{_CONV}",
        lambda m: f"stacks.{m.group(1)}.feature.{m.group(2)}",
    ),
    (
        rf"features\.(\d+)\.1\.bn\.{_BN}",
        lambda m: f"stacks.{m.group(1)}.feature.norm.{m.group(2)}",
    ),
    (rf"outs\.(\d+)\.conv\.{_CONV}", lambda m: f"stacks.{m.group(1)}.predictor.{m.group(2)}"),
    # Merge wraps the original's Conv wrapper: two ``.conv`` levels
    (
        rf"({'|'.join(_MERGES)})\.(\d+)\.conv\.conv\.{_CONV}",
        lambda m: f"stacks.{m.group(2)}.{m.group(1)}.{m.group(3)}",
    ),
)


def _map_key(key: str) -> str:
    return _first_match(_KEY_RULES, key)


def convert_official_hourglass_state_dict(
    state_dict: Dict[str, torch.Tensor], *, prefix: str = "backbone."
) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """
    Args:
        state_dict: an official ``PoseNet`` state dict (any ``nstack``/``inp_dim``/``oup_dim``);
            ``module.`` (DataParallel) and ``model.`` (the original's ``Trainer``) prefixes are
            stripped.
        prefix: put before every d2ext key: ``"backbone."`` for a D2 model holding the
            :class:`StackedHourglass` as its ``backbone``, ``""`` for the bare backbone.
    Returns:
        (d2ext state dict, floating tensors in float32; {official key: d2ext key}), official
        keys without their wrapper prefixes.
    Raises:
        KeyError naming every official key with no d2ext counterpart, so nothing is lost.
    """
    out, names, unknown = {}, {}, []
    for key, value in state_dict.items():
        k = _strip_wrappers(key)
        try:
            nk = prefix + _map_key(k)
        except KeyError:
            unknown.append(key)
            continue
        if nk in out:
            raise KeyError(f"official hourglass keys map twice onto {nk!r} (e.g. {key!r})")
        out[nk] = value.float() if value.is_floating_point() else value
        names[k] = nk
    if unknown:
        raise KeyError(f"official hourglass keys with no d2ext counterpart: {unknown}")
    return out, names


def infer_official_hourglass_config(state_dict: Dict[str, torch.Tensor]) -> Dict[str, int]:
    """The :class:`StackedHourglass` arguments an official state dict was trained with,
    read from its keys and shapes: ``num_stacks``, ``width``, ``num_keypoints``, ``depth``,
    ``increase`` (the ``MODEL.HOURGLASS`` keys in lower case)."""
    sd = {_strip_wrappers(k): v for k, v in state_dict.items()}
    if "outs.0.conv.weight" not in sd or "pre.4.conv3.conv.weight" not in sd:
        raise KeyError("not an official PoseNet state dict: no outs.0.conv / pre.4.conv3.conv")
    stacks = {int(k.split(".")[1]) for k in sd if k.startswith("hgs.")}
    depth = max(k.split(".").count("low2") for k in sd if k.startswith("hgs.0.0."))
    width = sd["pre.4.conv3.conv.weight"].shape[0]
    return {
        "num_stacks": len(stacks),
        "width": width,
        "num_keypoints": sd["outs.0.conv.weight"].shape[0],
        "depth": depth,
        "increase": sd["hgs.0.0.low1.conv3.conv.weight"].shape[0] - width,
    }
