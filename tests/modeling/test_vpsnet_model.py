"""VPSNet end to end on CPU with tiny inputs: training steps on hand-built frame pairs (fuse,
track head, no fuse, no track head, the frozen RAFT flow), tracked inference over a hand-built
clip (ids stable, reset, the first frame its own reference) through plain forward,
VideoPredictor and VideoClipModel, an overfit run of the match loss, and the pair mapper."""

import os

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import transforms as T
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage
from PIL import Image

from d2ext import add_d2ext_config
from d2ext.data import PanopticLabelSpace, build_train_mapper
from d2ext.data.mappers import VPSNetPairMapper
from d2ext.engine import VideoClipModel, VideoPredictor
from d2ext.modeling.upsnet import meta_arch as upsnet_meta_arch
from d2ext.modeling.vpsnet import STUFF_SEGMENT_ID_BASE, VPSNet

S, T_ = 2, 3  # stuff, thing classes
H, W = 64, 64
CONFIG = os.path.join(
    os.path.dirname(__file__), "..", "..", "configs", "VPSNet", "vpsnet_R_18_synth.yaml"
)
TINY = {
    "DATASETS.TRAIN": "()",
    "DATASETS.TEST": "()",
    "MODEL.ROI_HEADS.NUM_CLASSES": T_,
    "MODEL.UPSNET.NUM_STUFF_CLASSES": S,
    "MODEL.FPN.OUT_CHANNELS": 16,
    "MODEL.RPN.POST_NMS_TOPK_TRAIN": 30,
    "MODEL.RPN.POST_NMS_TOPK_TEST": 30,
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 32,
    "MODEL.ROI_BOX_HEAD.FC_DIM": 32,
    "MODEL.ROI_MASK_HEAD.CONV_DIM": 16,
    "MODEL.UPSNET.SEM_SEG_HEAD.CONV_DIM": 16,
    "MODEL.UPSNET.PANOPTIC.STUFF_AREA_LIMIT": 4,
    "MODEL.VPSNET.FUSE.FLOW_REFINE_CONV_DIMS": [8, 8],
    "MODEL.VPSNET.TRACK_HEAD.FC_DIM": 32,
    "INPUT.MIN_SIZE_TEST": H,
    "INPUT.MAX_SIZE_TEST": W,
}


def tiny_cfg(**opts):
    cfg = get_cfg()
    add_d2ext_config(cfg)
    cfg.merge_from_file(CONFIG)
    for key, value in {**TINY, **opts}.items():
        cfg.merge_from_list([key, value])
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def tiny_model(**opts):
    torch.manual_seed(0)
    return build_model(tiny_cfg(**opts))


def _frame(boxes, classes, track_ids, h=H, w=W, seed=0):
    """UPSNet training dict of a frame with box-shaped objects, stuff 0 / 1 in two bands."""
    gen = torch.Generator().manual_seed(seed)
    sem = torch.zeros((h, w), dtype=torch.long)
    sem[h // 2 :] = 1
    masks = torch.zeros((len(boxes), h, w), dtype=torch.bool)
    for m, (x0, y0, x1, y1), c in zip(masks, boxes, classes):
        m[y0:y1, x0:x1] = True
        sem[m] = S + c
    inst = Instances((h, w))
    inst.gt_masks = BitMasks(masks)
    inst.gt_boxes = inst.gt_masks.get_bounding_boxes()
    inst.gt_classes = torch.tensor(classes, dtype=torch.long)
    inst.gt_track_ids = torch.tensor(track_ids, dtype=torch.long)
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen)
    return {"image": image, "sem_seg": sem, "instances": inst, "file_name": f"f{seed}"}


def pair_batch():
    """Two pairs: objects 7 and 9 moving right, 9 absent from the second pair's reference."""
    t0 = _frame([(4, 4, 24, 24), (34, 30, 60, 60)], [0, 2], [7, 9], seed=1)
    r0 = _frame([(8, 4, 28, 24), (36, 30, 62, 60), (2, 40, 14, 60)], [0, 2, 1], [7, 9, 11], seed=2)
    t1 = _frame([(10, 10, 30, 40), (40, 4, 56, 20)], [1, 2], [3, 4], seed=3)
    r1 = _frame([(12, 10, 32, 40)], [1], [3], seed=4)
    return [dict(t0, reference=r0), dict(t1, reference=r1)]


def _train_step(model, batch):
    model.train()
    with EventStorage():
        losses = model(batch)
        model.zero_grad()
        sum(losses.values()).backward()
    return losses


UPSNET_LOSSES = ("loss_sem_seg", "loss_panoptic", "loss_mask", "loss_cls", "loss_rpn_cls")


def test_train_step_reaches_fuse_and_track_head():
    model = tiny_model()
    assert isinstance(model, VPSNet) and model.fuse is not None and model.flow_net is None
    losses = _train_step(model, pair_batch())
    for key in UPSNET_LOSSES + ("loss_match",):
        assert key in losses and torch.isfinite(losses[key]), key
    assert losses["loss_match"] > 0
    assert model.fuse.attention.fusion.weight.grad.abs().sum() > 0
    assert model.fuse.flow_refine.estimator[0][0].weight.grad.abs().sum() > 0
    assert model.track_head.fcs[0].weight.grad.abs().sum() > 0


def test_reference_frame_without_things_trains():
    """Every object of the target left the view by the reference frame (no GT instance there):
    all proposals are "new object", the match loss is 0 for that pair and training goes on."""
    batch = pair_batch()
    batch[1]["reference"] = _frame([], [], [], seed=5)
    losses = _train_step(tiny_model(), batch)
    assert all(torch.isfinite(v) for v in losses.values()) and losses["loss_match"] > 0
    batch[0]["reference"] = _frame([], [], [], seed=6)
    losses = _train_step(tiny_model(), batch)
    assert losses["loss_match"].item() == 0.0


def test_without_fuse_has_no_fuse_parameters_and_trains():
    model = tiny_model(**{"MODEL.VPSNET.FUSE_ON": False})
    assert model.fuse is None and model.flow_net is None
    assert not [n for n, _ in model.named_parameters() if n.startswith(("fuse.", "flow_net."))]
    losses = _train_step(model, pair_batch())
    assert all(torch.isfinite(v) for v in losses.values()) and "loss_match" in losses
    assert model.track_head.fcs[-1].weight.grad.abs().sum() > 0


def test_without_track_head_trains_and_links_by_mask_iou():
    model = tiny_model(**{"MODEL.VPSNET.TRACK_ON": False})
    assert model.track_head is None
    losses = _train_step(model, pair_batch())
    assert "loss_match" not in losses and all(torch.isfinite(v) for v in losses.values())


def test_raft_flow_is_frozen_and_the_first_frame_is_its_own_reference():
    model = tiny_model(**{"MODEL.VPSNET.FLOW_NET": "raft", "MODEL.VPSNET.FLOW_NUM_UPDATES": 1})
    assert all(not p.requires_grad for p in model.flow_net.parameters())
    model.train()
    assert not model.flow_net.training  # frozen, as the original's FlowNet2
    seen = []
    model.flow_net.register_forward_hook(lambda m, args, out: seen.append((args, out)))
    batch = [dict(_frame([(4, 4, 40, 40)], [0], [1], 128, 128, 5), reference=None)]
    batch[0]["reference"] = _frame([(8, 4, 44, 40)], [0], [1], 128, 128, 6)
    losses = _train_step(model, batch)
    assert torch.isfinite(losses["loss_match"])
    (target, reference), flow = seen[0]
    assert torch.equal(target[0], batch[0]["image"].float())
    assert torch.equal(reference[0], batch[0]["reference"]["image"].float())
    assert flow.shape == (1, 2, 128, 128) and not flow.requires_grad
    model.eval()
    with torch.no_grad():
        model([{"image": batch[0]["image"], "height": 128, "width": 128}])
    (target, reference), _ = seen[1]
    assert torch.equal(target, reference)  # a video's first frame: the reference is itself


# ---------------------------------------------------------------------------- tracked inference
# per frame: (boxes in input pixels, classes); A and B persist, A moving; C appears at frame 2
CLIP = [
    ([(4, 4, 24, 24), (36, 36, 60, 60)], [0, 1]),
    ([(6, 4, 26, 24), (36, 36, 60, 60)], [0, 1]),
    ([(8, 4, 28, 24), (36, 36, 60, 60), (40, 2, 60, 20)], [0, 1, 0]),
]


@pytest.fixture
def fixed_detections(monkeypatch):
    """Make a model's panoptic detections the next frame's of a queue (CLIP by default), with
    full-box masks, so that tracking is tested on known objects."""
    queue = []

    def select(boxes, scores, image_size, *args):
        b, c = queue.pop(0)
        n = len(b)
        return Boxes(torch.tensor(b, dtype=torch.float32)), torch.full((n,), 0.9), torch.tensor(c)

    # VPSNet runs UPSNet's detect_from_features: its selection is the one to replace
    monkeypatch.setattr(upsnet_meta_arch, "select_panoptic_detections", select)

    def prepare(model, frames=CLIP):
        queue[:] = list(frames)
        monkeypatch.setattr(
            model,
            "_mask_logits",
            lambda f, boxes, c: [torch.full((len(b), 14, 14), 20.0) for b in boxes],
        )
        model.panoptic_head.stuff_override_fraction = 0.0  # the random semantic head
        model.eval()
        return model

    return prepare


def _thing_ids(out):
    panoptic, segments = out["panoptic_seg"]
    things = {s["instance_id"]: s["id"] for s in segments if s["isthing"]}
    ids = out["instances"].pred_track_ids.tolist()
    assert [things[k] for k in sorted(things)] == [ids[k] for k in sorted(things)]
    for s in segments:
        assert (panoptic == s["id"]).sum() == s["area"] > 0
        if not s["isthing"]:
            assert s["id"] == STUFF_SEGMENT_ID_BASE + s["category_id"]
    return ids


def _clip_inputs(video_id=0):
    gen = torch.Generator().manual_seed(7)
    return [
        {
            "image": torch.randint(0, 256, (3, H, W), dtype=torch.uint8, generator=gen),
            "height": H,
            "width": W,
            "video_id": video_id,
            "frame_idx": t,
        }
        for t in range(len(CLIP))
    ]


@pytest.mark.parametrize("track_on", [True, False])
def test_ids_stable_over_a_clip_and_reset_starts_new_ones(fixed_detections, track_on):
    model = fixed_detections(tiny_model(**{"MODEL.VPSNET.TRACK_ON": track_on}))
    fused = []
    model.fuse.register_forward_hook(lambda m, args, out: fused.append(args[:2]))
    backbone_out = []
    model.backbone.register_forward_hook(lambda m, args, out: backbone_out.append(out))
    with torch.no_grad():
        outs = [model([x])[0] for x in _clip_inputs()]
    assert [_thing_ids(o) for o in outs] == [[1, 2], [1, 2], [1, 2, 3]]
    # reference: the frame itself, then the previous frame's own (unfused) features
    assert torch.equal(fused[0][1]["p2"], backbone_out[0]["p2"])
    assert torch.equal(fused[1][1]["p2"], backbone_out[0]["p2"])
    assert torch.equal(fused[2][1]["p2"], backbone_out[1]["p2"])
    assert outs[0]["instances"].pred_masks.shape == (2, H, W)

    # a new video_id starts a new video: ids from 1 again, the frame its own reference
    fixed_detections(model, [CLIP[2]])
    with torch.no_grad():
        out = model([_clip_inputs(video_id=1)[0]])[0]
    assert _thing_ids(out) == [1, 2, 3]
    assert torch.equal(fused[-1][1]["p2"], backbone_out[-1]["p2"])
    # reset() does the same for inputs without video ids
    swapped = ([CLIP[1][0][1], CLIP[1][0][0]], [1, 0])  # B first: [2, 1] if A, B were known
    fixed_detections(model, CLIP[:2] + [swapped])
    frames = [
        {k: v for k, v in x.items() if k not in ("video_id", "frame_idx")} for x in _clip_inputs()
    ]
    with torch.no_grad():
        model.reset()
        assert _thing_ids(model(frames[:2])[0]) == [1, 2]
        model.reset()
        assert _thing_ids(model([frames[2]])[0]) == [1, 2]


@pytest.mark.parametrize("track_on", [True, False])
def test_frames_without_detections(track_on):
    model = tiny_model(**{"MODEL.VPSNET.TRACK_ON": track_on}).eval()
    model.panoptic_head.score_thresh = 1.01  # nothing passes
    with torch.no_grad():
        outs = model(_clip_inputs()[:2])
    for out in outs:
        assert len(out["instances"]) == 0 and out["instances"].pred_track_ids.shape == (0,)
        assert not [s for s in out["panoptic_seg"][1] if s["isthing"]]


def test_video_predictor_and_clip_model_drive_it(fixed_detections):
    cfg = tiny_cfg()
    torch.manual_seed(0)
    predictor = VideoPredictor(cfg)
    model = fixed_detections(predictor.model)
    frames = [np.random.RandomState(t).randint(0, 256, (H, W, 3), dtype=np.uint8) for t in range(3)]
    ids = [inst.pred_track_ids.tolist() for inst in predictor.run(frames)]
    assert ids == [[1, 2], [1, 2], [1, 2, 3]]
    # the whole output of the last frame: its thing segments carry the track ids
    _, segments = predictor.last_output["panoptic_seg"]
    assert sorted(s["id"] for s in segments if s["isthing"]) == [1, 2, 3]
    predictor.reset()
    assert predictor.last_output is None
    fixed_detections(model, [CLIP[1]])
    assert predictor(frames[0]).pred_track_ids.tolist() == [1, 2]
    with pytest.raises(ValueError, match="64x64"):
        predictor(np.zeros((32, 64, 3), np.uint8))

    fixed_detections(model)
    result = VideoClipModel(model).predict_clip({"video_id": 3, "frames": _clip_inputs(3)})
    assert sorted(t["track_id"] for t in result["tracks"]) == [1, 2, 3]
    assert [o["instances"].pred_track_ids.tolist() for o in result["frames"]][-1] == [1, 2, 3]
    state = model.init_video_state()
    fixed_detections(model, CLIP[:2])
    model.forward_video([_clip_inputs()[0]], state)
    with pytest.raises(ValueError, match="frames so far are 64x64"):
        model.forward_video([{"image": torch.zeros(3, 32, 64, dtype=torch.uint8)}], state)


def test_overfit_one_batch_match_loss_falls():
    """The track head alone learns to tell the pair's objects apart (the rest frozen: a fast
    run; proposals are re-sampled every step, as in training)."""
    model = tiny_model(**{"MODEL.VPSNET.FUSE_ON": False})
    model.requires_grad_(False)
    model.track_head.requires_grad_(True)
    optimizer = torch.optim.Adam(model.track_head.parameters(), lr=0.003)
    batch = pair_batch()
    history = []
    for _ in range(7):
        losses = _train_step(model, batch)
        history.append(float(losses["loss_match"].detach()))
        optimizer.step()
    assert history[-1] < 0.2 * history[0] and history[0] > 0.1, history


# ---------------------------------------------------------------------------- the pair mapper
def _write_video_frames(tmp_path, videos=((0, 3), (1, 1)), h=16, w=20):
    """Per-frame panoptic video dicts (cityscapes_vps loader format): stuff id 5 on top, thing
    ids 7 (left) and 9 (right) below; the image's left half is bright, so a flip shows."""
    dicts = []
    for video, length in videos:
        for t in range(length):
            ids = np.zeros((h, w), np.int64)
            ids[: h // 2] = 5
            ids[h // 2 :, : w // 2] = 7
            ids[h // 2 :, w // 2 + 2 :] = 9
            rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=2).astype(np.uint8)
            stem = tmp_path / f"v{video}_f{t}"
            Image.fromarray(rgb).save(f"{stem}_pan.png")
            image = np.zeros((h, w, 3), np.uint8)
            image[:, : w // 2] = 200 + 10 * t  # the frame index shows in the brightness
            Image.fromarray(image).save(f"{stem}.png")
            dicts.append(
                {
                    "file_name": f"{stem}.png",
                    "pan_seg_file_name": f"{stem}_pan.png",
                    "height": h,
                    "width": w,
                    "image_id": f"{video}_{t}",
                    "video_id": video,
                    "frame_idx": t,
                    "length": length,
                    "segments_info": [
                        {"id": 5, "category_id": 1, "isthing": False, "iscrowd": 0},
                        {"id": 7, "category_id": 0, "isthing": True, "iscrowd": 0},
                        {"id": 9, "category_id": 2, "isthing": True, "iscrowd": 0},
                    ],
                }
            )
    return dicts


def _mapper(frames, augmentations=()):
    return VPSNetPairMapper(
        is_train=True,
        augmentations=list(augmentations),
        image_format="RGB",
        label_space=PanopticLabelSpace(thing_ids=(0, 2), stuff_ids=(1, 3)),
        frames=frames,
    )


def test_pair_mapper_pairs_within_a_video_with_the_same_flip(tmp_path):
    frames = _write_video_frames(tmp_path)
    mapper = _mapper(frames, [T.RandomFlip(prob=1.0, horizontal=True)])
    np.random.seed(0)
    seen = set()
    for _ in range(12):
        out = mapper(frames[1])
        ref = out["reference"]
        seen.add(ref["frame_idx"])
        assert ref["video_id"] == 0 and ref["frame_idx"] in (0, 2)
        for x in (out, ref):
            image = x["image"]
            assert (image[:, :, -1] > 0).all() and (image[:, :, 0] == 0).all()  # both flipped
            assert x["instances"].gt_track_ids.tolist() == [7, 9]
            # flipped: thing 7 (left before) is now on the right
            assert x["instances"].gt_boxes.tensor[0, 0] >= 10
        # the reference frame's own pixels (brightness encodes its index)
        assert int(ref["image"][0, 0, -1]) == 200 + 10 * ref["frame_idx"]
    assert seen == {0, 2}
    # ends: the other neighbour; a one-frame video: the frame itself
    assert {mapper(frames[0])["reference"]["frame_idx"] for _ in range(6)} == {1}
    assert {mapper(frames[2])["reference"]["frame_idx"] for _ in range(6)} == {1}
    single = mapper(frames[3])
    assert single["reference"]["video_id"] == 1 and single["reference"]["frame_idx"] == 0


def test_pair_mapper_errors(tmp_path):
    frames = _write_video_frames(tmp_path)
    mapper = _mapper(frames)
    no_video = {k: v for k, v in frames[0].items() if k != "video_id"}
    with pytest.raises(KeyError, match="v0_f0.png.*video_id"):
        mapper(no_video)
    with pytest.raises(KeyError, match="video 5 frame 0"):
        mapper(dict(frames[0], video_id=5))
    (tmp_path / "other").mkdir()
    other = _write_video_frames(tmp_path / "other", videos=((0, 1),), h=24, w=20)
    with pytest.raises(ValueError, match="frame size changes"):
        _mapper([frames[0], dict(other[0], frame_idx=1)])(frames[0])
    with pytest.raises(ValueError, match="two frames 0"):
        _mapper(frames + frames[:1])


def test_pair_mapper_is_the_config_s_mapper():
    cfg = tiny_cfg()
    mapper = build_train_mapper(cfg)
    assert isinstance(mapper, VPSNetPairMapper)
    assert mapper.reference_offsets == [-1, 1] and mapper.dataset_names == []
