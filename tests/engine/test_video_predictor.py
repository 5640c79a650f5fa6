"""VideoPredictor (d2ext/engine/video_predictor.py) with tiny fake models and the tiny YOLACT:
DefaultPredictor's pre-processing, batches of frames for stateless models, the video-state
protocol (init_video_state / forward_video) carried frame to frame and restarted by reset(),
stable track ids, lazy reading, and the frame-size-change error."""

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.engine import DefaultPredictor
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import Boxes, Instances
from torch import nn
from yolact_tiny import tiny_cfg

from d2ext.engine import VideoPredictor

H, W = 20, 30  # frame size; MIN_SIZE_TEST 40 doubles it for the model


def _detect(x):
    """One instance per bright colour channel of the model input: channel c (BGR order as
    given) > 127 is an object of class c, its mask scaled back to the frame size."""
    image, height, width = x["image"], x["height"], x["width"]
    masks, classes = [], []
    for c in range(3):
        fg = (image[c] > 127).float()[None, None]
        if fg.any():
            masks.append(nn.functional.interpolate(fg, (height, width), mode="nearest")[0, 0] > 0)
            classes.append(c)
    inst = Instances((height, width))
    inst.pred_masks = torch.stack(masks) if masks else torch.zeros((0, height, width), dtype=bool)
    inst.pred_boxes = Boxes(torch.zeros((len(masks), 4)))
    inst.scores = torch.full((len(masks),), 0.9)
    inst.pred_classes = torch.tensor(classes, dtype=torch.int64)
    return inst


class _VideoTestStateless(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.batches = []  # the inputs of every forward
        self.own_track_ids = False

    def forward(self, batched_inputs):
        self.batches.append(batched_inputs)
        outputs = []
        for x in batched_inputs:
            inst = _detect(x)
            if self.own_track_ids:  # a model with its own track head
                inst.pred_track_ids = torch.arange(len(inst)) + 100
            outputs.append({"instances": inst})
        return outputs


class _VideoTestStateful(nn.Module):
    """The video protocol: the state counts the frames seen since init_video_state()."""

    def __init__(self, cfg):
        super().__init__()
        self.inits = 0
        self.calls = []  # (number of inputs, state received, frame_idx of each input)

    def init_video_state(self):
        self.inits += 1
        return 0

    def forward_video(self, batched_inputs, state):
        self.calls.append((len(batched_inputs), state, [x["frame_idx"] for x in batched_inputs]))
        return [{"instances": _detect(x)} for x in batched_inputs], state + len(batched_inputs)

    def forward(self, batched_inputs):
        raise AssertionError("a stateful model must run through forward_video")


class _VideoTestSemSeg(nn.Module):
    def __init__(self, cfg):
        super().__init__()

    def forward(self, batched_inputs):
        return [{"sem_seg": torch.zeros(2, 4, 4)} for _ in batched_inputs]


for _cls in (_VideoTestStateless, _VideoTestStateful, _VideoTestSemSeg):
    if _cls.__name__ not in META_ARCH_REGISTRY:
        META_ARCH_REGISTRY.register(_cls)


def _cfg(arch, input_format="BGR"):
    cfg = get_cfg()
    cfg.MODEL.META_ARCHITECTURE = arch
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.INPUT.FORMAT = input_format
    cfg.INPUT.MIN_SIZE_TEST = 2 * H
    cfg.INPUT.MAX_SIZE_TEST = 1000
    return cfg


def _frames(n, size=(H, W)):
    """A 6x6 square moving 1 px right per frame in channel 0 (B), a fixed one in channel 2 (R)
    from frame 2 on."""
    frames = []
    for k in range(n):
        f = np.zeros((*size, 3), dtype=np.uint8)
        f[2:8, 2 + k : 8 + k, 0] = 255
        if k >= 2:
            f[10:16, 20:26, 2] = 255
        frames.append(f)
    return frames


def _summary(instances):
    return [
        (inst.image_size, inst.pred_classes.tolist(), inst.pred_track_ids.tolist())
        for inst in instances
    ]


def test_stateless_batches_preprocessing_and_track_ids():
    predictor = VideoPredictor(_cfg("_VideoTestStateless"))
    model = predictor.model
    assert not predictor.stateful and not model.training
    out = list(predictor.run(_frames(7), batch_size=3))
    assert [len(b) for b in model.batches] == [3, 3, 1]
    x = model.batches[0][0]  # D2's DefaultPredictor input: resized image, the frame's size
    assert x["image"].shape == (3, 2 * H, 2 * W) and x["image"].dtype == torch.float32
    assert (x["height"], x["width"]) == (H, W)
    assert [x["frame_idx"] for b in model.batches for x in b] == list(range(7))
    # the moving square keeps track 0; the square appearing at frame 2 starts track 1
    expected = [((H, W), [0], [0])] * 2 + [((H, W), [0, 2], [0, 1])] * 5
    assert _summary(out) == expected
    assert out[6].pred_masks[0, 2:8, 8:14].all() and out[6].pred_masks[0].sum() == 36
    # one frame at a time: the same predictions and ids; a new video starts from id 0 again
    predictor.reset()
    model.batches.clear()
    assert _summary([predictor(f) for f in _frames(7)]) == expected
    assert [len(b) for b in model.batches] == [1] * 7
    predictor.reset()
    assert _summary(list(predictor.run(_frames(7)[2:3]))) == [((H, W), [0, 2], [0, 1])]

    # a model that tracks by itself keeps its ids
    model.own_track_ids = True
    assert predictor(_frames(3)[2]).pred_track_ids.tolist() == [100, 101]


def test_rgb_input_format():
    predictor = VideoPredictor(_cfg("_VideoTestStateless", input_format="RGB"))
    # channel 0 of the BGR frame is the model's channel 2 in RGB
    assert predictor(_frames(1)[0]).pred_classes.tolist() == [2]
    gray = np.zeros((H, W), dtype=np.uint8)
    assert len(predictor(gray)) == 0
    with pytest.raises(ValueError, match="uint8"):
        predictor(np.zeros((H, W, 3), dtype=np.float32))


def test_frames_are_read_lazily():
    predictor = VideoPredictor(_cfg("_VideoTestStateless"))
    read = []

    def frames():
        for k, f in enumerate(_frames(6)):
            read.append(k)
            yield f

    results = predictor.run(frames(), batch_size=2)
    next(results)
    assert read == [0, 1]
    assert len(list(results)) == 5 and read == list(range(6))


def test_stateful_model_state_carried_and_reset():
    predictor = VideoPredictor(_cfg("_VideoTestStateful"))
    model = predictor.model
    assert predictor.stateful and model.inits == 1
    out = list(predictor.run(_frames(5), batch_size=4))  # one frame per forward_video call
    assert model.calls == [(1, k, [k]) for k in range(5)]
    assert predictor.state == 5
    assert [i.pred_track_ids.tolist() for i in out] == [[0], [0], [0, 1], [0, 1], [0, 1]]
    predictor(_frames(6)[5])
    assert model.calls[-1] == (1, 5, [5])

    predictor.reset()
    assert model.inits == 2 and predictor.state == 0
    assert predictor(_frames(4)[3]).pred_track_ids.tolist() == [0, 1]
    assert model.calls[-1] == (1, 0, [0])


def test_frame_size_change_is_an_error_until_reset():
    predictor = VideoPredictor(_cfg("_VideoTestStateful"))
    frames = _frames(3) + _frames(1, size=(H + 2, W))
    results, got = predictor.run(frames), []
    with pytest.raises(
        ValueError, match=rf"frame 3\): the frame is {H + 2}x{W} .* {H}x{W}; call reset"
    ):
        for inst in results:
            got.append(inst)
    assert len(got) == 3

    # stateless, in a batch: the frames before the bad one still come out
    predictor = VideoPredictor(_cfg("_VideoTestStateless"))
    got = []
    with pytest.raises(ValueError, match="frame 3"):
        for inst in predictor.run(frames, batch_size=4):
            got.append(inst)
    assert len(got) == 3
    predictor.reset()
    assert predictor(frames[3]).image_size == (H + 2, W)


def test_errors():
    predictor = VideoPredictor(_cfg("_VideoTestStateless"))
    with pytest.raises(ValueError, match="batch_size"):
        next(predictor.run(_frames(1), batch_size=0))
    predictor = VideoPredictor(_cfg("_VideoTestSemSeg"))
    with pytest.raises(ValueError, match=r"instance predictions; .* \['sem_seg'\] for frame 0"):
        predictor(_frames(1)[0])


def test_yolact_matches_default_predictor_and_batches():
    cfg = tiny_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    predictor = VideoPredictor(cfg)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(3)]
    single = [predictor(f) for f in frames]
    reference = DefaultPredictor(cfg)
    reference.model = predictor.model  # the same random weights
    for inst, f in zip(single, frames):
        ref = reference(f)["instances"]
        assert inst.image_size == (48, 64) and len(inst) == len(ref) > 0
        assert torch.equal(inst.pred_masks, ref.pred_masks)
        assert torch.equal(inst.scores, ref.scores)
        assert inst.pred_track_ids.dtype == torch.int64 and len(inst.pred_track_ids) == len(inst)
    predictor.reset()
    batched = list(predictor.run(frames, batch_size=3))
    for a, b in zip(single, batched):
        assert torch.allclose(a.scores, b.scores, atol=1e-5)
        assert torch.equal(a.pred_track_ids, b.pred_track_ids)
