"""StackedHourglass as a D2 backbone: built from yacs and from LazyConfig-style kwargs, output
names/shapes, intermediate supervision, the additive skip branch, and its input checks."""

import pytest
import torch
from detectron2.config import LazyCall as L
from detectron2.config import get_cfg, instantiate
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, build_backbone

from d2ext import add_d2ext_config
from d2ext.modeling.hourglass import Hourglass, PreActBottleneck, StackedHourglass

SMALL = dict(width=16, num_keypoints=5, depth=2)  # size_divisibility 4 * 2^2 = 16


def _cfg(**overrides):
    cfg = get_cfg()
    add_d2ext_config(cfg)
    cfg.MODEL.BACKBONE.NAME = "StackedHourglass"
    for k, v in overrides.items():
        setattr(cfg.MODEL.HOURGLASS, k, v)
    return cfg


def test_defaults_are_the_papers_model():
    hg = _cfg().MODEL.HOURGLASS
    assert (hg.NUM_STACKS, hg.WIDTH, hg.DEPTH, hg.NUM_KEYPOINTS) == (8, 256, 4, 16)
    assert "StackedHourglass" in BACKBONE_REGISTRY


@pytest.mark.parametrize("num_stacks", [1, 2])
def test_build_from_yacs_shapes(num_stacks):
    cfg = _cfg(NUM_STACKS=num_stacks, WIDTH=16, NUM_KEYPOINTS=5, DEPTH=2)
    model = build_backbone(cfg, ShapeSpec(channels=3))
    assert isinstance(model, StackedHourglass)
    names = [f"stack{i}" for i in range(num_stacks)]
    assert list(model.output_shape()) == names
    assert all(s.channels == 5 and s.stride == 4 for s in model.output_shape().values())
    assert model.size_divisibility == 16
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 32, 48))
    assert list(out) == names
    assert all(v.shape == (2, 5, 8, 12) for v in out.values())
    stacked = model.stack_heatmaps(out)
    assert stacked.shape == (2, num_stacks, 5, 8, 12)
    assert torch.equal(stacked[:, -1], out[names[-1]])


def test_build_from_lazy_config_matches_yacs():
    lazy = instantiate(L(StackedHourglass)(num_stacks=2, **SMALL))
    yacs = build_backbone(
        _cfg(NUM_STACKS=2, WIDTH=16, NUM_KEYPOINTS=5, DEPTH=2), ShapeSpec(channels=3)
    )
    assert {k: v.shape for k, v in lazy.state_dict().items()} == {
        k: v.shape for k, v in yacs.state_dict().items()
    }
    # the last stack has no merge convs (the original builds nstack - 1 of them)
    assert lazy.stacks[0].merge_preds is not None and lazy.stacks[1].merge_preds is None


def test_gradient_reaches_every_stack():
    torch.manual_seed(0)
    model = StackedHourglass(num_stacks=3, **SMALL).train()
    out = model(torch.rand(2, 3, 32, 32))
    sum(v.square().mean() for v in out.values()).backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    no_grad = [n for n, p in trainable if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad, no_grad
    # the loss of stack 0 alone reaches the stem (intermediate supervision)
    model.zero_grad()
    out = model(torch.rand(2, 3, 32, 32))
    out["stack0"].square().mean().backward()
    assert model.stem.conv1.weight.grad.abs().sum() > 0
    assert model.stacks[2].predictor.weight.grad is None


def test_unused_shortcut_is_kept_but_frozen():
    same = PreActBottleneck(8, 8)
    wider = PreActBottleneck(8, 16)
    assert "shortcut.weight" in same.state_dict() and "shortcut.weight" in wider.state_dict()
    assert not same.shortcut.weight.requires_grad and wider.shortcut.weight.requires_grad
    x = torch.rand(1, 8, 4, 4)
    same.eval()
    with torch.no_grad():
        same.shortcut.weight.fill_(100.0)  # must not matter: identity skip
        ref = same.conv3(
            same.bn3(same.conv2(same.bn2(same.conv1(same.bn1(x).relu())).relu())).relu()
        )
        torch.testing.assert_close(same(x), ref + x)


def test_skip_branch_is_added_not_concatenated():
    hg = Hourglass(2, 8).eval()
    x = torch.rand(1, 8, 16, 16)
    with torch.no_grad():
        y = hg(x)
        assert y.shape == x.shape  # concatenation would give 16 channels
        skip = hg.skip(x)
        low = hg.up(hg.inner(hg.down(torch.nn.functional.max_pool2d(x, 2))))
        expected = skip + low.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
        torch.testing.assert_close(y, expected)


def test_increase_widens_only_the_outer_lower_branch():
    # the original passes `increase` to the outer level only; inner levels keep f + increase
    hg = Hourglass(3, 8, increase=4)
    assert hg.down.conv3.out_channels == 12 and hg.up.conv3.out_channels == 8
    assert hg.inner.down.conv3.out_channels == 12 and hg.inner.inner.down.conv3.out_channels == 12


@pytest.mark.parametrize("size", [(24, 32), (32, 40), (30, 32)])
def test_input_size_not_divisible_is_a_clear_error(size):
    model = StackedHourglass(num_stacks=1, **SMALL)
    with pytest.raises(ValueError, match="divisible by 16"):
        model(torch.rand(1, 3, *size))


def test_non_4d_input_is_a_clear_error():
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        StackedHourglass(num_stacks=1, **SMALL)(torch.rand(3, 32, 32))


@pytest.mark.parametrize(
    "key, value, arg",
    [
        ("NUM_STACKS", 0, "num_stacks"),
        ("WIDTH", 1, "width"),
        ("NUM_KEYPOINTS", 0, "num_keypoints"),
        ("DEPTH", 0, "depth"),
        ("INCREASE", -1, "increase"),
        ("WIDTH", 16.0, "width"),
    ],
)
def test_bad_config_values_are_clear_errors(key, value, arg):
    with pytest.raises(ValueError, match=f"{arg} must be an int"):
        build_backbone(_cfg(**{key: value}), ShapeSpec(channels=3))


def test_in_channels_follow_the_input_shape():
    cfg = _cfg(NUM_STACKS=1, WIDTH=16, NUM_KEYPOINTS=5, DEPTH=2)
    model = build_backbone(cfg, ShapeSpec(channels=1)).eval()
    assert model.stem.conv1.weight.shape[1] == 1
    with torch.no_grad():
        assert model(torch.rand(1, 1, 16, 16))["stack0"].shape == (1, 5, 4, 4)
