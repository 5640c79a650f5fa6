"""YolactEdge on tiny CPU inputs (the tiny YOLACT of tests/yolact_tiny.py + a small flow net):
k=1 is YOLACT bit for bit, non-keyframes never run res4/res5, the keyframe schedule through
VideoPredictor, frame-size changes, bad configs (the training stages:
test_yolact_edge_training.py)."""

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from yolact_tiny import tiny_cfg

from d2ext.engine.video_predictor import VideoPredictor
from d2ext.modeling.yolact_edge import YolactEdge, YolactEdgeVideoState

H, W = 64, 80


def edge_cfg(k=3, **edge):
    cfg = tiny_cfg(size=96)
    cfg.MODEL.META_ARCHITECTURE = "YolactEdge"
    cfg.MODEL.DEVICE = "cpu"
    cfg.INPUT.MIN_SIZE_TEST = H  # VideoPredictor's test resize: keep frames at H x W
    cfg.INPUT.MAX_SIZE_TEST = 1000
    e = cfg.MODEL.YOLACT_EDGE
    e.KEYFRAME_INTERVAL = k
    e.FLOW_REDUCE_CHANNELS = [8]
    e.FLOW_ENCODE_CHANNELS = 8
    for key, value in edge.items():
        e[key] = value
    return cfg


def build(cfg, seed=0):
    torch.manual_seed(seed)
    return build_model(cfg).eval()


def frame(seed, h=H, w=W):
    g = torch.Generator().manual_seed(seed)
    return {
        "image": (torch.rand(3, h, w, generator=g) * 255).to(torch.uint8),
        "height": h,
        "width": w,
    }


def yolact_twin(edge):
    """Plain YOLACT with YolactEdge's weights (its flow net and SPA left out)."""
    cfg = edge_cfg()
    cfg.MODEL.META_ARCHITECTURE = "YOLACT"
    model = build(cfg, seed=1)
    missing, unexpected = model.load_state_dict(edge.state_dict(), strict=False)
    assert not missing and all(k.startswith(("flow_net.", "spa.")) for k in unexpected)
    return model


def assert_same_instances(a, b):
    assert len(a) > 0 and len(a) == len(b)
    assert torch.equal(a.pred_boxes.tensor, b.pred_boxes.tensor)
    assert torch.equal(a.scores, b.scores)
    assert torch.equal(a.pred_classes, b.pred_classes)
    assert torch.equal(a.pred_masks, b.pred_masks)


def run_video(model, frames, state=None):
    state = model.init_video_state() if state is None else state
    outputs = []
    with torch.no_grad():
        for x in frames:
            (out,), state = model.forward_video([x], state)
            outputs.append(out)
    return outputs, state


def stage_calls(model):
    """Counts of forward calls of the ResNet stages and the flow net (forward hooks)."""
    counts = {"res3": 0, "res4": 0, "res5": 0, "flow_net": 0}
    modules = {n: getattr(model.backbone.bottom_up, n) for n in ("res3", "res4", "res5")}
    modules["flow_net"] = model.flow_net
    for name, module in modules.items():
        module.register_forward_hook(lambda *_, n=name: counts.__setitem__(n, counts[n] + 1))
    return counts


def test_k1_is_yolact_bit_for_bit():
    edge = build(edge_cfg(k=1))
    yolact = yolact_twin(edge)
    frames = [frame(s) for s in range(3)]
    outputs, state = run_video(edge, frames)
    assert [o["is_keyframe"] for o in outputs] == [True] * 3 and state.frame_index == 3
    with torch.no_grad():
        for x, out in zip(frames, outputs):
            (ref,) = yolact([x])
            assert_same_instances(out["instances"], ref["instances"])
            (plain,) = edge([x])  # forward without state: per-image YOLACT
            assert_same_instances(plain["instances"], ref["instances"])


def test_nonkeyframes_skip_res4_res5_and_keyframes_are_yolact():
    edge = build(edge_cfg(k=3))
    yolact = yolact_twin(edge)
    counts = stage_calls(edge)
    frames = [frame(s) for s in range(4)]
    seen = []
    state = edge.init_video_state()
    with torch.no_grad():
        for x in frames:
            (out,), state = edge.forward_video([x], state)
            seen.append((out["is_keyframe"], dict(counts)))
            assert out["instances"].pred_masks.shape[1:] == (H, W)
    assert [s[0] for s in seen] == [True, False, False, True]
    # res3 every frame; res4/res5 only on the keyframes; the flow net only between them
    assert [s[1]["res3"] for s in seen] == [1, 2, 3, 4]
    assert [(s[1]["res4"], s[1]["res5"]) for s in seen] == [(1, 1), (1, 1), (1, 1), (2, 2)]
    assert [s[1]["flow_net"] for s in seen] == [0, 1, 2, 2]
    outputs, _ = run_video(edge, frames)
    with torch.no_grad():
        for i in (0, 3):
            assert_same_instances(outputs[i]["instances"], yolact([frames[i]])[0]["instances"])
        # a non-keyframe's prediction is the warped one, not the frame's own full pass
        ref = yolact([frames[1]])[0]["instances"]
    got = outputs[1]["instances"]
    assert len(got) != len(ref) or not torch.equal(got.scores, ref.scores)


def test_state_is_not_mutated_and_batches_of_frames_continue_the_schedule():
    edge = build(edge_cfg(k=2))
    frames = [frame(s) for s in range(3)]
    state0 = edge.init_video_state()
    with torch.no_grad():
        outs, state = edge.forward_video(frames[:2], state0)
        (last,), state = edge.forward_video(frames[2:], state)
    assert state0 == YolactEdgeVideoState()  # the caller's state is never changed in place
    assert [o["is_keyframe"] for o in outs + [last]] == [True, False, True]
    assert (state.frame_index, state.keyframe_index) == (3, 2)
    one_by_one, _ = run_video(edge, frames)
    for a, b in zip(outs + [last], one_by_one):
        assert_same_instances(a["instances"], b["instances"])


def test_video_predictor_keyframe_schedule():
    cfg = edge_cfg(k=3)
    torch.manual_seed(0)
    predictor = VideoPredictor(cfg)
    assert isinstance(predictor.model, YolactEdge) and predictor.stateful
    counts = stage_calls(predictor.model)
    rng = np.random.RandomState(0)
    frames = [rng.randint(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(7)]
    res5 = []
    for instances in predictor.run(frames):
        res5.append(counts["res5"])
        assert instances.image_size == (H, W)
        assert len(instances.pred_track_ids) == len(instances)
    assert res5 == [1, 1, 1, 2, 2, 2, 3]  # keyframes 0, 3, 6
    assert predictor.state.frame_index == 7 and predictor.state.keyframe_index == 6
    predictor.reset()  # a new video starts with a keyframe
    predictor(frames[0])
    assert counts["res5"] == 4 and predictor.state.keyframe_index == 0


def test_frame_size_change_starts_a_new_keyframe():
    """The model starts a new keyframe at a frame of another size (the schedule counts on
    from it); VideoPredictor refuses the frame instead (a new video needs reset())."""
    edge = build(edge_cfg(k=5))
    yolact = yolact_twin(edge)
    frames = [frame(0), frame(1), frame(2, h=H + 8), frame(3, h=H + 8)]
    outputs, state = run_video(edge, frames)
    assert [o["is_keyframe"] for o in outputs] == [True, False, True, False]
    assert state.keyframe.image_size == (H + 8, W) and state.keyframe_index == 2
    with torch.no_grad():
        ref = yolact([frames[2]])[0]["instances"]
    assert_same_instances(outputs[2]["instances"], ref)
    assert outputs[3]["instances"].image_size == (H + 8, W)

    predictor = VideoPredictor(edge_cfg(k=5))
    predictor(np.zeros((H, W, 3), np.uint8))
    with pytest.raises(ValueError, match=r"frame 1.*call reset\(\)"):
        predictor(np.zeros((H + 8, W, 3), np.uint8))


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("WARP_FEATURES", ["p3", "p4"], "MODEL.YOLACT_EDGE.WARP_FEATURES"),
        ("WARP_FEATURES", ["p4"], "MODEL.YOLACT_EDGE.WARP_FEATURES"),
        ("KEYFRAME_INTERVAL", 0, "MODEL.YOLACT_EDGE.KEYFRAME_INTERVAL"),
        ("FLOW_NET", "raft", "MODEL.YOLACT_EDGE.FLOW_NET"),
        ("TRAIN_STAGE", "video", "MODEL.YOLACT_EDGE.TRAIN_STAGE"),
    ],
)
def test_bad_config_is_a_clear_error(key, value, match):
    with pytest.raises(ValueError, match=match):
        build_model(edge_cfg(**{key: value}))


def test_fpn_without_c3_c5_inputs_is_a_clear_error():
    cfg = edge_cfg()
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.YOLACT.FPN_IN_FEATURES = ["res2", "res3", "res4", "res5"]
    with pytest.raises(ValueError, match="MODEL.YOLACT.FPN_IN_FEATURES"):
        build_model(cfg)


def test_forward_video_refuses_training_mode_and_foreign_state():
    edge = build(edge_cfg())
    with pytest.raises(TypeError, match="init_video_state"):
        edge.forward_video([frame(0)], {})
    edge.train()
    with pytest.raises(ValueError, match="eval"):
        edge.forward_video([frame(0)], edge.init_video_state())
