"""YolactEdge's training stages (d2ext/modeling/yolact_edge/training.py) on the tiny model of
test_yolact_edge.py: what each stage trains, that every trainable parameter gets a gradient
under DDP (D2 wraps with find_unused_parameters=False), the losses, and the joint (video) stage
overfitting a few frame pairs."""

import pytest
import torch
import torch.distributed as dist
from detectron2.utils.events import EventStorage
from test_yolact_edge import H, W, build, edge_cfg, stage_calls
from torch.nn.parallel import DistributedDataParallel

from d2ext.modeling.common import endpoint_error
from d2ext.modeling.yolact import YOLACT
from d2ext.modeling.yolact_edge.training import pair_inputs, trains_parameter

DETECTION = {"loss_box", "loss_cls", "loss_mask", "loss_sem_seg"}
FLOW_FINEST = ("flow_net.pred1.", "flow_net.upfeat2.", "flow_net.upflow2.")
OVERFIT_STEPS = 25


def training_input(seed, shift=3):
    """A frame with two objects and, as its keyframe, the same frame ``shift`` px to the
    right; ``"flow"`` (2, H, W) pixels, current -> keyframe, as the pair mapper gives it."""
    from test_yolact_model import make_input

    x = make_input(h=H, w=W, boxes=((8, 10, 40, 50), (30, 20, 70, 60)), seed=seed)
    x["reference_image"] = torch.roll(x["image"], shift, dims=-1)
    x["flow"] = torch.stack([torch.full((H, W), float(shift)), torch.zeros(H, W)])
    return x


def assert_gradients_exactly_on_trainable(model):
    for name, p in model.named_parameters():
        assert (p.grad is not None) == p.requires_grad, name


@pytest.fixture
def single_process_group(tmp_path):
    """A one-process gloo group: DDP's reducer then checks, as on many GPUs, that every
    parameter it was given received a gradient (else the next forward raises)."""
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("stage", ["image", "flow_gt", "flow", "joint"])
@pytest.mark.parametrize(
    "edge_keys",
    [{}, {"FLOW_SCALE_BIAS": False}, {"USE_SPA": False}],
    ids=["default", "no_scale_bias", "no_spa"],
)
def test_every_trainable_parameter_gets_a_gradient_under_ddp(
    single_process_group, stage, edge_keys
):
    edge = build(edge_cfg(TRAIN_STAGE=stage, **edge_keys)).train()
    ddp = DistributedDataParallel(edge, find_unused_parameters=False)
    inputs = [training_input(0), training_input(1)]
    with EventStorage():
        for _ in range(2):  # a parameter left without gradient fails the second forward
            ddp.zero_grad()
            losses = ddp(inputs)
            assert all(torch.isfinite(v) for v in losses.values()), losses
            sum(losses.values()).backward()
    assert_gradients_exactly_on_trainable(edge)


def test_trains_parameter_rejects_an_unknown_stage():
    with pytest.raises(ValueError, match="TRAIN_STAGE 'video'"):
        trains_parameter("video", "head.cls_score.weight")


def test_image_stage_trains_like_yolact():
    edge = build(edge_cfg()).train()
    with EventStorage():
        losses = edge([training_input(0), training_input(1)])
    assert set(losses) == DETECTION
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    # the flow net and SPA are unused on single images: frozen
    for name, p in edge.named_parameters():
        assert p.requires_grad == (not name.startswith(("flow_net.", "spa."))), name
    assert_gradients_exactly_on_trainable(edge)


def test_flow_stage_trains_only_the_flow_net_and_spa():
    edge = build(edge_cfg(TRAIN_STAGE="flow")).train()
    trainable = {n for n, p in edge.named_parameters() if p.requires_grad}
    assert {n.split(".")[0] for n in trainable} == {"flow_net", "spa"}
    # the finest flow level (C3 size) is not used by the P4/P5 warp: frozen
    assert not [n for n in trainable if n.startswith(FLOW_FINEST)]
    assert edge.training and edge.flow_net.training and not edge.backbone.training
    before = {k: v.clone() for k, v in edge.backbone.state_dict().items()}
    with EventStorage():
        losses = edge([training_input(0), training_input(1)])
    assert set(losses) == {"loss_fm"} and torch.isfinite(losses["loss_fm"])
    assert 0 < losses["loss_fm"].item() < 2  # a mean of 1 - cosine
    losses["loss_fm"].backward()
    assert_gradients_exactly_on_trainable(edge)
    assert any(p.grad.abs().sum() > 0 for p in edge.spa.parameters())
    assert edge.flow_net.pred2.flow.weight.grad.abs().sum() > 0
    # frozen BN statistics stay as they were
    after = edge.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)

    x = training_input(0)
    del x["reference_image"]
    with pytest.raises(ValueError, match=r"img0.png has no \['reference_image'\]"):
        edge([x])


def test_flow_gt_stage_trains_the_flow_net_on_ground_truth_flow():
    edge = build(edge_cfg(TRAIN_STAGE="flow_gt")).train()
    trainable = {n for n, p in edge.named_parameters() if p.requires_grad}
    assert {n.split(".")[0] for n in trainable} == {"flow_net"}
    assert "flow_net.pred1.flow.weight" in trainable  # all three levels are supervised
    assert not [n for n in trainable if ".scale." in n or ".bias." in n]  # the feature heads
    counts = stage_calls(edge)
    inputs = [training_input(0), training_input(1)]
    for x in inputs:  # (2, H, W) pixel flow on the current frame's grid
        x["flow"] = torch.stack([torch.full((H, W), 3.0), torch.full((H, W), -2.0)])
    with EventStorage():
        losses = edge(inputs)
    assert set(losses) == {"loss_flow"} and torch.isfinite(losses["loss_flow"])
    assert (counts["res4"], counts["res5"]) == (0, 0)  # the flow stage reads C3 only
    losses["loss_flow"].backward()
    assert_gradients_exactly_on_trainable(edge)
    # the loss is the original's: the EPE of the three levels against the pixel flow in its
    # normalised units (x 2 / W / WARP_FLOW_SCALE), which the S x S stretch leaves unchanged
    with torch.no_grad():
        images, references = pair_inputs(edge, inputs, ["reference_image", "flow"])
        lateral = [edge.lateral_c3(edge.bottom_up_to_c3(i)) for i in (images, references)]
        flows = edge.flow_net(*lateral).flows
    gt = (
        torch.stack([x["flow"] for x in inputs])
        * torch.tensor([2 / W * 8, 2 / H * 8])[:, None, None]
    )
    expected = sum(endpoint_error(f, gt) for f in flows)
    torch.testing.assert_close(losses["loss_flow"].detach(), expected)

    # a video's last frame, paired with itself by the mapper (offset 0): exactly zero flow
    still = training_input(2, shift=0)
    del still["flow"]
    still["frame_offset"] = 0
    with EventStorage():
        loss = edge([still])["loss_flow"]
    with torch.no_grad():
        images, references = pair_inputs(edge, [still], ["reference_image"])
        lateral = [edge.lateral_c3(edge.bottom_up_to_c3(i)) for i in (images, references)]
        flows = edge.flow_net(*lateral).flows
    expected = sum(endpoint_error(f, torch.zeros(1, 2, H, W)) for f in flows)
    torch.testing.assert_close(loss.detach(), expected)

    del inputs[1]["flow"]
    with pytest.raises(ValueError, match=r"img1.png has no \['flow'\]"):
        edge(inputs)


def test_joint_stage_is_the_original_video_stage():
    edge = build(edge_cfg(TRAIN_STAGE="joint")).train()
    # the original's fine_tune_layers: everything but the ResNet and FPN phase 1 (the laterals);
    # the flow net's C3-size level is unused by the P4/P5 warp
    frozen_prefixes = ("backbone.bottom_up.", "backbone.fpn_lateral") + FLOW_FINEST
    for name, p in edge.named_parameters():
        assert p.requires_grad == (not name.startswith(frozen_prefixes)), name
    trainable = {n.split(".")[0] for n, p in edge.named_parameters() if p.requires_grad}
    assert trainable == {"backbone", "proto_net", "head", "semantic_seg_conv", "flow_net", "spa"}
    # modules without a trainable parameter in eval mode: the ResNet's BN keeps its statistics
    assert edge.backbone.training and edge.head.training and edge.flow_net.training
    assert not edge.backbone.bottom_up.training and not edge.backbone.fpn_lateral3.training
    before = {k: v.clone() for k, v in edge.backbone.bottom_up.state_dict().items()}

    inputs = [training_input(0), training_input(1)]
    with EventStorage():
        losses = edge(inputs)
        plain = YOLACT.forward(edge, inputs)
    assert set(losses) == DETECTION | {f"{k}_warp" for k in DETECTION} | {"loss_fm"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert 0 < losses["loss_fm"].item() < 2
    # the "compute" pass is YOLACT's own training forward on the current frames, bit for bit
    for k in DETECTION:
        assert torch.equal(losses[k], plain[k]), k
    assert any(not torch.equal(losses[k], losses[f"{k}_warp"]) for k in DETECTION)

    # the warp pass's detection losses reach the flow net and SPA, the full pass's do not
    warp = sum(losses[f"{k}_warp"] for k in DETECTION)
    warp.backward(retain_graph=True)
    assert edge.flow_net.pred2.flow.weight.grad.abs().sum() > 0
    assert edge.flow_net.pred3.scale.weight.grad.abs().sum() > 0
    assert any(p.grad.abs().sum() > 0 for p in edge.spa.parameters())
    edge.zero_grad()
    sum(losses[k] for k in DETECTION).backward(retain_graph=True)
    assert all(p.grad is None for p in (*edge.flow_net.parameters(), *edge.spa.parameters()))
    edge.zero_grad()
    sum(losses.values()).backward()
    assert_gradients_exactly_on_trainable(edge)
    after = edge.backbone.bottom_up.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_joint_stage_overfits_a_few_pairs():
    """A few AdamW steps on two fixed pairs: the summed joint loss, and each of its three
    parts (full pass, warp pass, feature matching), go down."""
    edge = build(edge_cfg(TRAIN_STAGE="joint")).train()
    inputs = [training_input(0), training_input(1)]
    optimizer = torch.optim.AdamW([p for p in edge.parameters() if p.requires_grad], lr=2e-3)

    def parts(losses):
        return {
            "full": sum(losses[k] for k in DETECTION).item(),
            "warp": sum(losses[f"{k}_warp"] for k in DETECTION).item(),
            "fm": losses["loss_fm"].item(),
        }

    history = []
    with EventStorage():
        for _ in range(OVERFIT_STEPS):
            losses = edge(inputs)
            history.append(parts(losses))
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
        history.append(parts(edge(inputs)))
    first, last = history[0], history[-1]
    assert sum(last.values()) < 0.5 * sum(first.values()), history
    assert all(last[k] < first[k] for k in first), history
