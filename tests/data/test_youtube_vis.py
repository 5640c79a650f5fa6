"""YouTube-VIS loading (d2ext.data.youtube_vis): exact per-frame / per-clip dicts of a tiny
hand-written json (2 videos of 3 frames of 8x10), the writer, DATASETS.REGISTER, bad inputs."""

import copy
import json
import logging
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from detectron2.evaluation import COCOEvaluator
from detectron2.structures import BitMasks, Boxes, BoxMode, Instances
from PIL import Image

import d2ext  # noqa: F401  (registration)
from d2ext.data import DATASET_FORMATS, SafeMapper, register_datasets
from d2ext.data.youtube_vis import (
    load_youtube_vis_clips,
    load_youtube_vis_json,
    youtube_vis_annotation,
)

H, W = 8, 10


def _mask(rows, cols):
    m = np.zeros((H, W), bool)
    m[rows, cols] = True
    return m


# video 1: track 11 (category 5) in frames 0-1, track 12 (category 3) in frame 2 only;
# video 2: track 13 never visible, so its frames have no objects
MASK_A0, MASK_A1 = _mask(slice(2, 4), slice(1, 4)), _mask(slice(2, 4), slice(2, 5))
MASK_B2 = _mask(slice(5, 7), slice(6, 9))


def _compressed(mask):
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [H, W], "counts": rle["counts"].decode()}


def _vis_json():
    names = {v: [f"{v}/{t:05d}.jpg" for t in (0, 5, 10)] for v in ("vid_a", "vid_b")}
    return {
        "videos": [
            {"id": 1, "width": W, "height": H, "length": 3, "file_names": names["vid_a"]},
            {"id": 2, "width": W, "height": H, "length": 3, "file_names": names["vid_b"]},
        ],
        "annotations": [
            {
                "id": 11,
                "video_id": 1,
                "category_id": 5,
                "iscrowd": 0,
                # uncompressed column-major runs, as the official files
                "segmentations": [
                    {"counts": [10, 2, 6, 2, 6, 2, 52], "size": [H, W]},
                    {"counts": [18, 2, 6, 2, 6, 2, 44], "size": [H, W]},
                    None,
                ],
                "bboxes": [[1, 2, 3, 2], [2, 2, 3, 2], None],
                "areas": [6, 6, None],
            },
            {
                "id": 12,
                "video_id": 1,
                "category_id": 3,
                "iscrowd": 0,
                "segmentations": [None, None, _compressed(MASK_B2)],
                "bboxes": [None, None, None],  # the box comes from the mask
            },
            {
                "id": 13,
                "video_id": 2,
                "category_id": 5,
                "iscrowd": 0,
                "segmentations": [None, None, None],
                "bboxes": [None, None, None],
                "areas": [None, None, None],
            },
        ],
        "categories": [{"id": 5, "name": "dog"}, {"id": 3, "name": "cat"}],
    }


def _write(tmp_path, data, name="vis.json"):
    path = str(tmp_path / name)
    with open(path, "w") as f:
        json.dump(data, f)
    return path


def _frames_on_disk(root, data):
    for video in data["videos"]:
        for name in video["file_names"]:
            os.makedirs(os.path.dirname(os.path.join(root, name)), exist_ok=True)
            Image.new("RGB", (video["width"], video["height"]), (90, 120, 30)).save(
                os.path.join(root, name)
            )


def _ann(mask, box, category_id, track_id):
    return {
        "bbox": box,
        "bbox_mode": BoxMode.XYWH_ABS,
        "segmentation": _compressed(mask),
        "category_id": category_id,
        "iscrowd": 0,
        "track_id": track_id,
    }


def _expected_clips(root, flow_root=None):
    anns = {
        (1, 0): [_ann(MASK_A0, [1.0, 2.0, 3.0, 2.0], 1, 11)],
        (1, 1): [_ann(MASK_A1, [2.0, 2.0, 3.0, 2.0], 1, 11)],
        (1, 2): [_ann(MASK_B2, [6.0, 5.0, 3.0, 2.0], 0, 12)],
    }
    clips, image_id = [], 0
    for vid, folder in ((1, "vid_a"), (2, "vid_b")):
        stems = [f"{folder}/{t:05d}" for t in (0, 5, 10)]
        paths = [os.path.join(root, s + ".jpg") for s in stems]
        frames = []
        for t in range(3):
            image_id += 1
            flow = (
                None if flow_root is None or t == 2 else os.path.join(flow_root, stems[t] + ".npy")
            )
            frames.append(
                {
                    "file_name": paths[t],
                    "height": H,
                    "width": W,
                    "image_id": image_id,
                    "video_id": vid,
                    "frame_idx": t,
                    "length": 3,
                    "video_frames": paths,
                    "flow_file": flow,
                    "annotations": anns.get((vid, t), []),
                }
            )
        clips.append(
            {"video_id": vid, "height": H, "width": W, "length": 3, "file_names": paths,
             "frames": frames}
        )  # fmt: skip
    return clips


def test_hand_written_json_exact(tmp_path):
    json_file = _write(tmp_path, _vis_json())
    root = str(tmp_path / "JPEGImages")
    assert load_youtube_vis_clips(json_file, root) == _expected_clips(root)
    frames = load_youtube_vis_json(json_file, root)
    assert frames == [f for c in _expected_clips(root) for f in c["frames"]]
    assert [f["image_id"] for f in frames] == [1, 2, 3, 4, 5, 6]
    # the uncompressed RLEs decode to the masks they were written from
    got = [
        mask_util.decode(a["segmentation"]).astype(bool) for f in frames for a in f["annotations"]
    ]
    assert all(np.array_equal(g, m) for g, m in zip(got, [MASK_A0, MASK_A1, MASK_B2]))
    flow_root = str(tmp_path / "Flow")
    assert load_youtube_vis_clips(json_file, root, flow_root) == _expected_clips(root, flow_root)


def test_writer_round_trip(tmp_path):
    masks = [MASK_A0, None, np.zeros((H, W), bool), MASK_B2, np.ones((H, W), bool)]
    ann = youtube_vis_annotation(7, 1, 3, masks)
    assert ann["segmentations"][0] == {"counts": [10, 2, 6, 2, 6, 2, 52], "size": [H, W]}
    assert ann["segmentations"][4] == {"counts": [0, H * W], "size": [H, W]}
    assert ann["segmentations"][1] is ann["segmentations"][2] is None  # an empty mask is absent
    assert ann["bboxes"] == [[1, 2, 3, 2], None, None, [6, 5, 3, 2], [0, 0, W, H]]
    assert ann["areas"] == [6, None, None, 6, H * W]
    for seg, m in zip(ann["segmentations"], masks):
        if seg is not None:
            assert np.array_equal(mask_util.decode(mask_util.frPyObjects(seg, H, W)), m)
    data = {"videos": [{"id": 1, "width": W, "height": H, "length": 5,
                        "file_names": [f"v/{t}.jpg" for t in range(5)]}],
            "annotations": [ann], "categories": [{"id": 3, "name": "cat"}]}  # fmt: skip
    frames = load_youtube_vis_json(_write(tmp_path, data), str(tmp_path))
    assert [len(f["annotations"]) for f in frames] == [1, 0, 0, 1, 1]
    assert frames[3]["annotations"][0]["bbox"] == [6.0, 5.0, 3.0, 2.0]


def _bad(tmp_path, edit):
    data = _vis_json()
    edit(data)
    return _write(tmp_path, data, "bad.json")


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["annotations"][0]["segmentations"].pop(), r"annotation id 11 \(video id 1\)"
         r": 'segmentations' has 2 entries but the video has 3 frames"),
        (lambda d: d["annotations"][0]["bboxes"].append(None), r"annotation id 11 \(video id 1\)"
         r": 'bboxes' has 4 entries but the video has 3 frames"),
        (lambda d: d["annotations"][2]["areas"].pop(), r"annotation id 13 \(video id 2\): "
         r"'areas' has 2 entries"),
        (lambda d: d["annotations"][1].update(segmentations=[]), r"annotation id 12 \(video id "
         r"1\): 'segmentations' is empty; it needs one entry \(or null\) for each of the video's 3"),
        (lambda d: d["annotations"][1].pop("segmentations"), r"annotation id 12 .*'segmentations'"
         r" must be a list"),
        (lambda d: d["videos"][1].update(length=4), r"video id 2: 'length' is 4 but 'file_names'"
         r" lists 3"),
        (lambda d: d["videos"][0].update(file_names=[]), r"video id 1: 'file_names' must list"),
        (lambda d: d["videos"].append(dict(d["videos"][0])), r"video id 1 appears twice"),
        (lambda d: d["annotations"][2].update(video_id=9), r"annotation id 13: video_id 9 is not"),
        (lambda d: d["annotations"][1].update(category_id=4), r"annotation id 12 .*category_id 4"
         r" is not among the json's categories \[3, 5\]"),
        (lambda d: d["annotations"][0]["bboxes"].__setitem__(2, [0, 0, 1, 1]), r"annotation id "
         r"11 \(video id 1\): frame 2 has a bbox but no segmentation"),
        (lambda d: d["annotations"][0]["segmentations"][1].update(size=[W, H]), r"annotation id "
         r"11 \(video id 1\), frame 1: RLE of size \[10, 8\], the video is \[8, 10\]"),
        (lambda d: d.pop("videos"), r"has no 'videos' list"),
    ],
)  # fmt: skip
def test_bad_inputs_name_the_file_and_video(tmp_path, edit, message):
    json_file = _bad(tmp_path, edit)
    with pytest.raises(ValueError, match=message) as e:
        load_youtube_vis_json(json_file, str(tmp_path))
    assert repr(json_file) in str(e.value)


def test_not_json(tmp_path):
    path = str(tmp_path / "broken.json")
    with open(path, "w") as f:
        f.write('{"videos": [')
    with pytest.raises(ValueError, match="is not valid json"):
        load_youtube_vis_clips(path, str(tmp_path))


def test_one_frame_video_and_frames_without_objects(tmp_path):
    data = _vis_json()
    data["videos"][1].update(length=1, file_names=["vid_b/00000.jpg"])
    data["annotations"][2].update(segmentations=[None], bboxes=[None], areas=[None])
    data["annotations"].append(
        {"id": 14, "video_id": 2, "category_id": 3, "iscrowd": 0,
         "segmentations": [_compressed(MASK_A0)], "bboxes": [[1, 2, 3, 2]], "areas": [6]}
    )  # fmt: skip
    flow_root = str(tmp_path / "Flow")
    clips = load_youtube_vis_clips(_write(tmp_path, data), str(tmp_path), flow_root)
    one = clips[1]
    assert (one["length"], len(one["file_names"]), len(one["frames"])) == (1, 1, 1)
    frame = one["frames"][0]
    assert frame["flow_file"] is None and frame["frame_idx"] == 0 and frame["image_id"] == 4
    assert [a["track_id"] for a in frame["annotations"]] == [14]
    # no annotations at all (a test split): every frame, no objects
    data.pop("annotations")
    frames = load_youtube_vis_json(_write(tmp_path, data, "test.json"), str(tmp_path))
    assert len(frames) == 4 and all(f["annotations"] == [] for f in frames)


def test_register_format_and_d2_pipeline(tmp_path, new_name):
    assert {"youtube_vis", "youtube_vis_clips"} <= set(DATASET_FORMATS)
    data = _vis_json()
    json_file, root = _write(tmp_path, data), str(tmp_path / "JPEGImages")
    _frames_on_disk(root, data)
    frames_name, clips_name = new_name("vis"), new_name("vis_clips")
    with pytest.raises(FileNotFoundError, match="flow root"):
        register_datasets([(frames_name, "youtube_vis", json_file, root, str(tmp_path / "no"))])
    assert frames_name not in DatasetCatalog.list()
    register_datasets(
        [(frames_name, "youtube_vis", json_file, root), (clips_name, "youtube_vis_clips", json_file, root)]
    )  # fmt: skip
    assert DatasetCatalog.get(frames_name) == load_youtube_vis_json(json_file, root)
    assert DatasetCatalog.get(clips_name) == load_youtube_vis_clips(json_file, root)
    meta, clip_meta = MetadataCatalog.get(frames_name), MetadataCatalog.get(clips_name)
    assert meta.thing_classes == ["cat", "dog"]
    assert meta.thing_dataset_id_to_contiguous_id == {3: 0, 5: 1}
    assert (meta.evaluator_type, clip_meta.evaluator_type) == ("coco", "youtube_vis")
    assert meta.youtube_vis_json == json_file and meta.flow_root is None
    assert not hasattr(meta, "json_file")  # COCOEvaluator converts the per-frame dicts itself

    # D2's train mapper turns the RLEs into bitmasks; boxes and classes follow
    mapper = DatasetMapper(
        is_train=True, augmentations=[], image_format="RGB", use_instance_mask=True,
        instance_mask_format="bitmask",
    )  # fmt: skip
    out = mapper(copy.deepcopy(DatasetCatalog.get(frames_name)[0]))
    inst = out["instances"]
    assert out["image"].shape == (3, H, W) and inst.gt_classes.tolist() == [1]
    assert torch.equal(inst.gt_masks.tensor[0], torch.from_numpy(MASK_A0))
    assert inst.gt_boxes.tensor.tolist() == [[1.0, 2.0, 4.0, 4.0]]

    # per-frame mask AP through D2's COCOEvaluator: the ground truth as predictions is AP 100
    evaluator = COCOEvaluator(frames_name, tasks=("segm",), output_dir=str(tmp_path / "eval"))
    evaluator.reset()
    for frame in DatasetCatalog.get(frames_name):
        masks = [mask_util.decode(a["segmentation"]) for a in frame["annotations"]]
        pred = Instances((H, W))
        pred.pred_masks = torch.from_numpy(np.stack(masks) if masks else np.zeros((0, H, W))) > 0
        pred.pred_boxes = BitMasks(pred.pred_masks).get_bounding_boxes() if masks else Boxes([])
        pred.scores = torch.ones(len(masks))
        pred.pred_classes = torch.tensor([a["category_id"] for a in frame["annotations"]])
        evaluator.process([frame], [{"instances": pred}])
    assert evaluator.evaluate()["segm"]["AP"] == pytest.approx(100.0)


def test_unreadable_frames_reported_by_safe_mapper(tmp_path, caplog):
    data = _vis_json()
    root = str(tmp_path / "JPEGImages")
    _frames_on_disk(root, data)
    frames = load_youtube_vis_json(_write(tmp_path, data), root)
    os.remove(frames[1]["file_name"])
    Image.new("RGB", (W + 2, H), 0).save(frames[2]["file_name"])  # the size changes mid-video
    base = DatasetMapper(is_train=False, augmentations=[], image_format="RGB")
    test_mapper = SafeMapper(mapper=base, is_train=False)
    assert test_mapper(copy.deepcopy(frames[0]))["image"].shape == (3, H, W)
    for bad in frames[1:3]:
        with pytest.raises(OSError, match=bad["file_name"]):
            test_mapper(copy.deepcopy(bad))
    train_mapper = SafeMapper(mapper=base, is_train=True)
    with caplog.at_level(logging.WARNING, logger="d2ext.data.dataset_checks"):
        assert train_mapper(copy.deepcopy(frames[1])) is None
    assert frames[1]["file_name"] in caplog.text
