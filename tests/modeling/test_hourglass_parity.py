"""Parity with the official princeton-vl/pytorch_stacked_hourglass ``PoseNet``, on fixtures it
produced (``<repo>/../shared/fixtures/hourglass``, README there): converted official weights must
reproduce every stack's heatmaps and the original parser's keypoints, the converter must cover
the released 8-stack model's keys exactly, and the converter CLI must read a checkpoint laid out
as the original's ``train.py`` saves it.

Every size (stacks, width, K, depth, input size) comes from the fixture (its ``meta`` and its
state dict's shapes), so any fixture of the same layout runs through these tests unchanged.
"""

import glob
import json
import os
import sys

import pytest
import torch
from tool_runs import run_in_repo

from d2ext.modeling.common import HeatmapCodec
from d2ext.modeling.hourglass import (
    StackedHourglass,
    convert_official_hourglass_state_dict,
    infer_official_hourglass_config,
)

HEATMAP_ATOL = 1e-4


@pytest.fixture(scope="module")
def fixture_dir(require_shared):
    """``../shared/fixtures/hourglass`` (skips locally when absent, fails under CI=true)."""
    return require_shared("fixtures", "hourglass")


def _parity_files(fixture_dir):
    files = sorted(glob.glob(os.path.join(fixture_dir, "*.pt")))
    assert files, f"no parity fixture (*.pt) in {fixture_dir}"
    return files


def _settings(fx):
    """StackedHourglass kwargs of the fixture, from its state dict, checked against ``meta``."""
    settings = infer_official_hourglass_config(fx["state_dict"])
    meta = fx.get("meta", {})
    for ours, theirs in (
        ("num_stacks", "nstack"),
        ("width", "inp_dim"),
        ("num_keypoints", "oup_dim"),
    ):
        if theirs in meta:
            assert settings[ours] == meta[theirs], (ours, settings, meta)
    assert fx["heatmaps"].shape[1:3] == (settings["num_stacks"], settings["num_keypoints"])
    if "input_size" in meta:
        assert fx["image_nhwc"].shape[1:3] == (meta["input_size"],) * 2, meta
    return settings


def _run(fx):
    """(our backbone with the converted official weights, its outputs on the fixture image)."""
    model = StackedHourglass(**_settings(fx)).eval()
    sd, _ = convert_official_hourglass_state_dict(fx["state_dict"], prefix="")
    model.load_state_dict(sd, strict=True)
    # the original takes NHWC RGB in [0, 1] and permutes; the fixture image is already in [0, 1]
    image = fx["image_nhwc"].float().permute(0, 3, 1, 2)
    with torch.no_grad():
        out = model(image)
    return model, out


@pytest.fixture(scope="module")
def runs(fixture_dir):
    """[(fixture file, fixture dict, our model, our outputs)] for every fixture file."""
    result = []
    for path in _parity_files(fixture_dir):
        fx = torch.load(path, map_location="cpu", weights_only=False)
        result.append((path, fx, *_run(fx)))
    return result


def test_every_stack_matches_the_official_heatmaps(runs):
    for path, fx, model, out in runs:
        expected = fx["heatmaps"].float()
        ours = model.stack_heatmaps(out)
        assert ours.shape == expected.shape, (path, ours.shape, expected.shape)
        diffs = [(ours[:, s] - expected[:, s]).abs().max().item() for s in range(ours.shape[1])]
        print(f"{os.path.basename(path)}: max |diff| per stack {diffs}")
        assert max(diffs) <= HEATMAP_ATOL, (path, diffs)


def test_decoding_the_last_stack_reproduces_the_official_parser(runs):
    """``parsed_keypoints`` (N, K, 3) is ``HeatmapParser.parse`` on the last stack, columns as
    it returns them: x (along W), y, peak value; heatmap pixels in princeton's convention. A joint
    whose whole map is <= 0 has its NMS-ed map all zeros off its peak, so the original reports
    the first zero in raster order, unadjusted, with score 0 (a tie the codec resolves alike)."""
    for path, fx, model, out in runs:
        last = model.stack_heatmaps(out)[:, -1]
        height, width = last.shape[-2:]
        # sigma only matters for encoding; princeton's is output_res / 64
        codec = HeatmapCodec(heatmap_size=(height, width), sigma=width / 64, decode="princeton")
        expected = fx["parsed_keypoints"].float()
        for heatmaps in (last, fx["heatmaps"][:, -1].float()):
            coords, scores = codec.decode(heatmaps)
            torch.testing.assert_close(coords, expected[..., :2], rtol=0, atol=1e-6, msg=path)
            torch.testing.assert_close(scores, expected[..., 2], rtol=0, atol=HEATMAP_ATOL)


def _as_official_sized(shape, key):
    dtype = torch.long if key.endswith("num_batches_tracked") else torch.float32
    return torch.empty(shape, dtype=dtype, device="meta")


def test_converter_covers_the_official_keys_exactly(fixture_dir):
    with open(os.path.join(fixture_dir, "official_state_dict_keys.json")) as f:
        models = json.load(f)
    assert models
    for name, keys in models.items():
        official = {k: _as_official_sized(shape, k) for k, shape in keys}
        settings = infer_official_hourglass_config(official)
        with torch.device("meta"):
            ours = StackedHourglass(**settings).state_dict()
        converted, names = convert_official_hourglass_state_dict(official, prefix="")
        assert len(names) == len(official) and set(names) == set(official), name
        assert len(set(names.values())) == len(names), f"{name}: two keys map to one"
        wrong_shape = {
            k: (tuple(official[k].shape), tuple(ours[v].shape))
            for k, v in names.items()
            if v in ours and ours[v].shape != official[k].shape
        }
        assert not wrong_shape, (name, wrong_shape)
        assert set(converted) == set(ours), (
            name,
            sorted(set(converted) - set(ours))[:10],  # official keys we have no module for
            sorted(set(ours) - set(converted))[:10],  # ours left without an official tensor
        )


def test_unknown_official_key_is_named(runs):
    _, fx, _, _ = runs[0]
    sd = dict(fx["state_dict"], **{"hgs.0.0.extra.weight": torch.zeros(1)})
    with pytest.raises(KeyError, match=r"hgs\.0\.0\.extra\.weight"):
        convert_official_hourglass_state_dict(sd)


def test_converter_cli_on_a_train_py_checkpoint(runs, tmp_path):
    """The original's train.py saves {"state_dict", "optimizer", "epoch"} of its Trainer around
    DataParallel(PoseNet): keys read ``model.module.<key>``; a bare ``module.`` prefix too."""
    _, fx, _, out = runs[0]
    settings = _settings(fx)
    src = tmp_path / "checkpoint.pt"
    wrapped = {f"model.module.{k}": v for k, v in fx["state_dict"].items()}
    torch.save({"state_dict": wrapped, "optimizer": {}, "epoch": 3}, src)
    dst = tmp_path / "converted.pth"
    log = run_in_repo(
        [sys.executable, "tools/convert_hourglass_weights.py", str(src), str(dst)], tmp_path
    )
    for key, value in settings.items():
        assert f"MODEL.HOURGLASS.{key.upper()} {value}" in log, log
    ckpt = torch.load(dst, map_location="cpu", weights_only=False)
    assert ckpt["matching_heuristics"] is False
    assert all(k.startswith("backbone.") for k in ckpt["model"])
    reloaded = StackedHourglass(**settings).eval()
    reloaded.load_state_dict(
        {k[len("backbone.") :]: v for k, v in ckpt["model"].items()}, strict=True
    )
    with torch.no_grad():
        again = reloaded(fx["image_nhwc"].float().permute(0, 3, 1, 2))
    for name in out:
        assert torch.equal(again[name], out[name]), name
    # a bare DataParallel prefix converts to the same tensors
    plain, _ = convert_official_hourglass_state_dict(
        {f"module.{k}": v for k, v in fx["state_dict"].items()}
    )
    assert plain.keys() == ckpt["model"].keys()
    assert all(torch.equal(plain[k], ckpt["model"][k]) for k in plain)
