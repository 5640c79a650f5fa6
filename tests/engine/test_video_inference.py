"""Video evaluation through Trainer.test (d2ext/engine/video_inference.py) on the mini synthetic
videos (2 clips of 12 frames): the ground truth as predictions scores video AP and per-frame AP
100; the per-frame AP of a clip dataset comes from the video pass (the model's state carried),
not from a per-image pass; YolactEdge's keyframe schedule per clip; plain YOLACT on clips gives
exactly its per-frame dataset predictions; frames of another size and unreadable frames are
errors naming the video and the frame."""

import json
import os

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model
from detectron2.structures import Boxes, BoxMode, Instances
from torch import nn
from yolact_tiny import tiny_cfg

from d2ext.engine import Trainer
from d2ext.engine.video_inference import VideoClipMapper, VideoClipModel, is_clip_dataset

FRAMES = "synth_videos_mini_val"
CLIPS = FRAMES + "_clips"
NUM_FRAMES = 12  # frames per synthetic video


class _GroundTruthModel(nn.Module):
    """Predicts each frame's ground truth (by ``image_id``), scores 1, ``pred_track_ids`` the
    annotations' track ids."""

    def __init__(self):
        super().__init__()
        self.frames = {d["image_id"]: d for d in DatasetCatalog.get(FRAMES)}
        self.batches = []  # the inputs of every forward

    def forward(self, batched_inputs):
        self.batches.append(batched_inputs)
        return [{"instances": self.ground_truth(x)} for x in batched_inputs]

    def ground_truth(self, x, present=True):
        anns = self.frames[x["image_id"]]["annotations"] if present else []
        inst = Instances((x["height"], x["width"]))
        masks = [torch.from_numpy(mask_util.decode(a["segmentation"])).bool() for a in anns]
        inst.pred_masks = torch.stack(masks) if masks else torch.zeros((0, *inst.image_size)).bool()
        boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns]
        inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        inst.scores = torch.ones(len(anns))
        inst.pred_classes = torch.tensor([a["category_id"] for a in anns], dtype=torch.int64)
        inst.pred_track_ids = torch.tensor([a["track_id"] for a in anns], dtype=torch.int64)
        return inst


class _EveryOtherFrameModel(_GroundTruthModel):
    """The video protocol, its state the frames seen: ``forward_video`` predicts the ground truth
    on a video's even frames and nothing on its odd ones; plain ``forward`` every frame."""

    def init_video_state(self):
        return 0

    def forward_video(self, batched_inputs, state):
        outputs = []
        for x in batched_inputs:
            outputs.append({"instances": self.ground_truth(x, present=state % 2 == 0)})
            state += 1
        return outputs, state


def _dumps(x):
    return json.dumps(x, sort_keys=True)


def _same(a, b) -> bool:
    """Equal results dicts, NaN (a category without ground truth) equal to NaN."""
    return _dumps(a) == _dumps(b)


def _cfg(tmp_path, cfg=None, test=(FRAMES, CLIPS)):
    cfg = tiny_cfg() if cfg is None else cfg
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.YOLACT.NUM_CLASSES = len(MetadataCatalog.get(FRAMES).thing_classes)
    cfg.INPUT.MIN_SIZE_TEST = 64  # the 160 x 224 frames at 64 x 90 for the model
    cfg.INPUT.MAX_SIZE_TEST = 1000
    cfg.DATASETS.TEST = test
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.OUTPUT_DIR = str(tmp_path)
    return cfg


def _edge_cfg(tmp_path, k):
    cfg = tiny_cfg(size=96)
    cfg.MODEL.META_ARCHITECTURE = "YolactEdge"
    cfg.MODEL.YOLACT_EDGE.KEYFRAME_INTERVAL = k
    cfg.MODEL.YOLACT_EDGE.FLOW_REDUCE_CHANNELS = [8]
    cfg.MODEL.YOLACT_EDGE.FLOW_ENCODE_CHANNELS = 8
    return _cfg(tmp_path, cfg)


def _build(cfg):
    torch.manual_seed(0)
    return build_model(cfg).eval()


def _mapped_clips(cfg):
    return [VideoClipMapper(cfg)(c) for c in DatasetCatalog.get(CLIPS)]


def test_ground_truth_scores_100_and_per_frame_ap_follows_the_video_pass(tmp_path):
    assert is_clip_dataset(CLIPS) and not is_clip_dataset(FRAMES)
    assert MetadataCatalog.get(CLIPS).frame_dataset == FRAMES
    model = _GroundTruthModel()
    results = Trainer.test(_cfg(tmp_path), model)
    assert list(results) == [FRAMES, CLIPS]  # one dataset's dict per name, as D2's test
    assert set(results[CLIPS]) == {"segm_vis", "bbox", "segm"}
    assert results[CLIPS]["segm_vis"]["AP"] == pytest.approx(100)
    for task in ("bbox", "segm"):
        assert results[CLIPS][task]["AP"] == pytest.approx(100)
        assert _same(results[CLIPS][task], results[FRAMES][task])  # per-category NaNs too
    assert model.training  # the wrapper leaves the model in its own mode

    # the clips' frame inputs: D2's test mapper (resized uint8), at the video's size, in order
    clip_batches = model.batches[2 * NUM_FRAMES :]
    assert [len(b) for b in clip_batches] == [1] * 2 * NUM_FRAMES  # batch_size 1 by default
    x = clip_batches[0][0]
    assert set(x) == {"image", "height", "width", "frame_idx", "image_id", "file_name"}
    assert x["image"].shape == (3, 64, 90) and x["image"].dtype == torch.uint8
    assert (x["height"], x["width"]) == (160, 224)
    assert [b[0]["frame_idx"] for b in clip_batches] == list(range(NUM_FRAMES)) * 2
    with open(tmp_path / "inference" / "youtube_vis_results.json") as f:
        rows = json.load(f)  # one per predicted track: here the ground-truth tracks
    tracks = {a["track_id"] for d in DatasetCatalog.get(FRAMES) for a in d["annotations"]}
    assert len(rows) == len(tracks) > 2
    assert all(len(r["segmentations"]) == NUM_FRAMES for r in rows)

    # a stateful model: the per-frame AP of the clips is its video pass (odd frames empty),
    # the per-frame dataset's its per-image forward
    results = Trainer.test(_cfg(tmp_path), _EveryOtherFrameModel())
    assert results[FRAMES]["segm"]["AP"] == pytest.approx(100)
    # every category loses about half its frame recall: AP ~ 50 (precision 1 up to it)
    assert 40 < results[CLIPS]["segm"]["AP"] < 60
    assert 40 < results[CLIPS]["bbox"]["AP"] < 60
    # a track predicted on half its frames has a video IoU of 0.5 at most (more only for an
    # object absent from the odd frames)
    assert results[CLIPS]["segm_vis"]["AP"] < 5


def test_yolact_edge_keyframe_schedule_per_clip(tmp_path):
    cfg = _edge_cfg(tmp_path, k=1)
    edge = _build(cfg)
    clips = _mapped_clips(cfg)
    (out,) = VideoClipModel(edge)(clips[:1])
    assert [f["is_keyframe"] for f in out["frames"]] == [True] * NUM_FRAMES
    with torch.no_grad():
        for x, frame_out in zip(clips[0]["frames"], out["frames"]):
            (ref,) = edge([x])  # the frame by itself through forward
            got, ref = frame_out["instances"], ref["instances"]
            assert len(got) > 0 and got.image_size == (160, 224)
            assert torch.equal(got.pred_boxes.tensor, ref.pred_boxes.tensor)
            assert torch.equal(got.scores, ref.scores)
            assert torch.equal(got.pred_classes, ref.pred_classes)
            assert torch.equal(got.pred_masks, ref.pred_masks)
            ids = got.pred_track_ids.tolist()
            assert len(set(ids)) == len(ids) and min(ids) >= 0
    assert out["tracks"] and all(len(t["segmentations"]) == NUM_FRAMES for t in out["tracks"])

    edge.keyframe_interval = 3
    (out,) = VideoClipModel(edge)(clips[:1])
    assert [t for t, f in enumerate(out["frames"]) if f["is_keyframe"]] == [0, 3, 6, 9]
    # the state starts afresh per clip: without it the second clip would go on from frame 12
    edge.keyframe_interval = 5
    outs = VideoClipModel(edge)(clips)
    for out in outs:
        assert [t for t, f in enumerate(out["frames"]) if f["is_keyframe"]] == [0, 5, 10]


def test_yolact_edge_through_trainer_test(tmp_path):
    cfg = _edge_cfg(tmp_path, k=3)
    cfg.DATASETS.TEST = (CLIPS,)
    results = Trainer.test(cfg, _build(cfg))
    assert set(results) == {"segm_vis", "bbox", "segm"}  # one dataset: its own dict
    assert {"AP", "AP50", "AP75", "AR1", "AR10"} <= set(results["segm_vis"])
    assert all(np.isfinite(results[t]["AP"]) for t in results)


def test_plain_yolact_on_clips_is_its_per_frame_evaluation(tmp_path):
    """Frame by frame (batch 1, D2's test mapper), the clips' frame predictions are the
    per-frame dataset's: the same COCO result files."""
    written = {}
    for name in (FRAMES, CLIPS):
        cfg = _cfg(tmp_path / name, test=(name,))
        model = _build(cfg)
        results = Trainer.test(cfg, model)
        with open(tmp_path / name / "inference" / "coco_instances_results.json") as f:
            written[name] = json.load(f)
    assert "segm_vis" in results and len(written[FRAMES]) > 0
    assert sorted(map(_dumps, written[CLIPS])) == sorted(map(_dumps, written[FRAMES]))


def _write_clip(root, sizes, video_id=7):
    """A per-clip dict of frames of the given (h, w) written as JPEGs under ``root``."""
    frames, h0, w0 = [], *sizes[0]
    for t, (h, w) in enumerate(sizes):
        path = os.path.join(root, f"{t:05d}.jpg")
        cv2.imwrite(path, np.full((h, w, 3), 40 * t, dtype=np.uint8))
        frames.append(
            {"file_name": path, "height": h0, "width": w0, "image_id": 100 + t, "frame_idx": t}
        )
    return {"video_id": video_id, "height": h0, "width": w0, "length": len(frames),
            "file_names": [f["file_name"] for f in frames], "frames": frames}  # fmt: skip


def test_bad_frames_name_the_video_and_frame(tmp_path):
    cfg = _cfg(tmp_path)
    mapper = VideoClipMapper(cfg)
    clip = _write_clip(str(tmp_path), [(24, 32)] * 3)
    assert [f["image"].shape for f in mapper(clip)["frames"]] == [(3, 64, 85)] * 3

    clip = _write_clip(str(tmp_path), [(24, 32), (24, 32), (26, 32)])
    with pytest.raises(ValueError, match=r"video_id=7, frame 2 \(.*00002\.jpg\): the frame's size"):
        mapper(clip)
    clip = _write_clip(str(tmp_path), [(24, 32)] * 3)
    with open(clip["frames"][1]["file_name"], "wb") as f:
        f.write(b"not a jpeg")
    with pytest.raises(OSError, match=r"video_id=7, frame 1 \(.*00001\.jpg\): cannot read"):
        mapper(clip)
    os.remove(clip["frames"][1]["file_name"])
    with pytest.raises(OSError, match=r"video_id=7, frame 1 .*cannot read"):
        mapper(clip)
    with pytest.raises(ValueError, match="video_id=7: 'length' is 4 but 'frames' has 3"):
        mapper({**clip, "length": 4})

    # the same through Trainer.test on a registered clip dataset without a per-frame dataset
    name = "d2ext_test_bad_clips"
    DatasetCatalog.register(name, lambda: [clip])
    MetadataCatalog.get(name).set(evaluator_type="youtube_vis", thing_classes=["a", "b", "c"])
    try:
        with pytest.raises(OSError, match=r"video_id=7, frame 1 .*cannot read"):
            Trainer.test(_cfg(tmp_path, test=(name,)), _GroundTruthModel())
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_models_without_instances_and_bad_batch_size(tmp_path):
    class SemSeg(nn.Module):
        def forward(self, batched_inputs):
            return [{"sem_seg": torch.zeros(2, 4, 4)} for _ in batched_inputs]

    cfg = _cfg(tmp_path)
    clips = _mapped_clips(cfg)
    with pytest.raises(ValueError, match=r"video_id=1\) needs instance predictions; .*sem_seg"):
        VideoClipModel(SemSeg())(clips[:1])
    with pytest.raises(ValueError, match="batch_size"):
        VideoClipModel(SemSeg(), batch_size=0)
    model = _GroundTruthModel()
    (out,) = VideoClipModel(model, batch_size=5)(clips[:1])
    assert [len(b) for b in model.batches] == [5, 5, 2] and len(out["frames"]) == NUM_FRAMES
