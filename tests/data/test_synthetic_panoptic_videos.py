"""Synthetic panoptic videos (d2ext.data.synthetic.panoptic_videos) in the Cityscapes-VPS layout:
determinism, the files and names the loader and the official evaluator read, segments against
PNGs, ids over a video, exact flow, the registered dataset, and VPQ 100 of the gt on itself.

Small variants (64x128 frames, a few videos) under unique names in a tmp dir."""

import filecmp
import json
import os
import re
import shutil
import uuid

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image
from test_synthetic_videos import _warp_back_errors  # tests/data

import d2ext  # noqa: F401  (registration)
from d2ext.data.cityscapes_vps import gt_png_name, register_cityscapes_vps
from d2ext.data.synthetic import (
    PanopticVideoSpec,
    ensure_synthetic_generated,
    generate_panoptic_videos,
    register_synthetic_panoptic_videos,
    render_panoptic_video,
    synthetic_dataset_dir,
)
from d2ext.data.synthetic.categories import STUFF_CATEGORIES, THING_CATEGORIES, coco_categories
from d2ext.data.synthetic.panoptic_videos import (
    ANNOTATED_FRAMES,
    FRAME_SPACING,
    NUM_RAW_FRAMES,
    exact_flow,
    raw_frame_name,
)
from d2ext.data.synthetic.register_panoptic_videos import BUILTIN_PANOPTIC_VIDEOS
from d2ext.evaluation import VPQEvaluator, vpq_compute
from d2ext.evaluation.panoptic_png import read_panoptic_png
from d2ext.evaluation.vpq import gt_videos

SIZE = (64, 128)
SEED = 9
NUM_VIDEOS = 6  # videos 1 and 5 have a crowd, video 4's shapes all enter from outside
COLOR_ID = {c["id"]: c["color"][0] + 256 * c["color"][1] + 65536 * c["color"][2]
            for c in THING_CATEGORIES + STUFF_CATEGORIES}  # fmt: skip
THING_IDS = {c["id"] for c in THING_CATEGORIES}


@pytest.fixture(scope="module")
def vps(tmp_path_factory):
    """(dataset name, generated folder, gt json, its data), split "val"."""
    root = str(tmp_path_factory.mktemp("synth_vps"))
    name = f"_test_vps_{uuid.uuid4().hex[:8]}"
    register_synthetic_panoptic_videos(name, root, NUM_VIDEOS, SIZE, SEED, max_objects=5)
    assert ensure_synthetic_generated(name) == [name]
    out_dir = synthetic_dataset_dir(name)
    gt_json = os.path.join(out_dir, "panoptic_gt_val_city_vps.json")
    with open(gt_json) as f:
        data = json.load(f)
    yield name, out_dir, gt_json, data
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _videos(data):
    """[(video index, [(image, annotation)] of its 6 annotated frames)]."""
    pairs = list(zip(data["images"], data["annotations"]))
    return [(v, pairs[6 * v : 6 * v + 6]) for v in range(len(pairs) // 6)]


def test_generated_bytes_deterministic(tmp_path):
    spec = PanopticVideoSpec(2, (48, 96), 13, 3, "train")
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert generate_panoptic_videos(spec, a) and generate_panoptic_videos(spec, b)
    assert not generate_panoptic_videos(spec, a)
    files = sorted(os.path.relpath(os.path.join(d, f), a) for d, _, fs in os.walk(a) for f in fs)
    assert files == sorted(
        os.path.relpath(os.path.join(d, f), b) for d, _, fs in os.walk(b) for f in fs
    )
    assert len(files) == 1 + 2 + 2 * (NUM_RAW_FRAMES + 6 + 6 + 5 + 5)
    _, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
    assert mismatch == errors == []
    with pytest.raises(ValueError, match="num_videos"):
        PanopticVideoSpec(0, (48, 96), 1)
    with pytest.raises(ValueError, match="image_size"):
        PanopticVideoSpec(1, (16, 96), 1)
    with pytest.raises(ValueError, match="split"):
        PanopticVideoSpec(1, (48, 96), 1, split="my_split")


def test_layout_and_names_as_cityscapes_vps(vps):
    _, out_dir, gt_json, data = vps
    assert set(data) == {"images", "annotations", "categories"}
    assert data["categories"] == coco_categories(include_stuff=True)
    # the official eval_vpq.py's file order and 6-frame chunks hold (it raises otherwise)
    assert [len(frames) for _, frames in gt_videos(data, gt_json)] == [6] * NUM_VIDEOS
    with open(os.path.join(out_dir, "im_all_info_val_city_vps.json")) as f:
        raw = json.load(f)["images"]
    assert [r["file_name"] for r in raw] == [
        raw_frame_name(v, t) for v in range(NUM_VIDEOS) for t in range(NUM_RAW_FRAMES)
    ]
    assert sorted(os.listdir(os.path.join(out_dir, "val", "img_all"))) == sorted(
        r["file_name"] for r in raw
    )
    for v, frames in _videos(data):
        for f, (image, ann) in enumerate(frames):
            t = ANNOTATED_FRAMES[f]
            assert image["id"] == ann["image_id"] == f"{v + 1:04d}_{6 * v + f + 1:04d}_synth_" \
                f"{v + 1:06d}_{t:06d}"  # fmt: skip
            assert re.fullmatch(r"\d{4}_\d{4}_[a-z]+_\d{6}_\d{6}", image["id"])
            suffix = "_leftImg8bit.png" if f == 3 else "_newImg8bit.png"
            assert image["file_name"] == image["id"] + suffix
            assert ann["file_name"] == gt_png_name(image["file_name"])
            assert ann["file_name"].endswith("_gtFine_color.png" if f == 3 else "_final_mask.png")
            assert (image["height"], image["width"]) == SIZE
            frame = os.path.join(out_dir, "val", "img", image["file_name"])
            assert filecmp.cmp(frame, os.path.join(out_dir, "val", "img_all", raw_frame_name(v, t)))
            assert np.asarray(Image.open(frame)).shape == (*SIZE, 3)
            for folder, present in (("flow", f < 5), ("flow_prev", f > 0)):
                path = os.path.join(out_dir, "val", folder, image["id"] + ".npy")
                assert os.path.isfile(path) == present
                if present:
                    flow = np.load(path)
                    assert flow.shape == (*SIZE, 2) and flow.dtype == np.float32


def test_segments_agree_with_pngs_and_ids_with_the_videos(vps):
    _, out_dir, _, data = vps
    crowd_videos, void_patches = set(), 0
    for v, frames in _videos(data):
        video = render_panoptic_video(SEED, v, *SIZE, 5)
        categories, object_ids = {}, {}
        for f, (image, ann) in enumerate(frames):
            t = ANNOTATED_FRAMES[f]
            png = read_panoptic_png(
                os.path.join(out_dir, "val", "panoptic_video", ann["file_name"])
            )
            assert np.array_equal(png, video.panoptic[t])
            ids, counts = np.unique(png, return_counts=True)
            assert ids[0] == 0  # VOID in every frame (at least the bonnet)
            void_patches += int(((png == 0) & (video.layers[t] == 0)).any())
            areas = {int(i): int(c) for i, c in zip(ids[1:], counts[1:])}
            segments = {s["id"]: s for s in ann["segments_info"]}
            assert len(segments) == len(ann["segments_info"]) and areas == {
                i: s["area"] for i, s in segments.items()
            }
            for s in segments.values():
                assert categories.setdefault(s["id"], s["category_id"]) == s["category_id"]
                if s["category_id"] not in THING_IDS:
                    assert s["id"] == COLOR_ID[s["category_id"]] and s["iscrowd"] == 0
                elif s["iscrowd"]:
                    crowd_videos.add(v)
            # one id per shape, fixed over the video, distinct between shapes
            for k, obj in enumerate(video.video.objects, start=1):
                shown = np.unique(png[video.layers[t] == k])
                assert len(shown) <= 1
                if len(shown):
                    assert segments[int(shown[0])]["category_id"] == obj.category_id
                    assert object_ids.setdefault(k, int(shown[0])) == shown[0]
        assert len(set(object_ids.values())) == len(object_ids) > 0
    assert crowd_videos == {1, 5} and void_patches > 0


def test_exact_flow_warps_the_next_annotated_frame_back(vps):
    _, out_dir, _, data = vps
    errors, baselines = [], []
    for v, frames in _videos(data)[:4]:
        video = render_panoptic_video(SEED, v, *SIZE, 5)
        # a surface: one layer's one segment (each has a single smooth texture)
        surfaces = (video.layers.astype(np.int64) + 1) * 2**24 + video.panoptic
        on_disk = [np.asarray(Image.open(os.path.join(out_dir, "val", "img", im["file_name"])))
                   for im, _ in frames]  # fmt: skip
        for f in range(6):
            t = ANNOTATED_FRAMES[f]
            for folder, df in (("flow", 1), ("flow_prev", -1)):
                if not 0 <= f + df < 6:
                    continue
                t1 = t + df * FRAME_SPACING
                flow = np.load(os.path.join(out_dir, "val", folder, frames[f][0]["id"] + ".npy"))
                assert np.array_equal(flow, exact_flow(video, t, t1))
                assert (flow[video.layers[t] == -1] == 0).all()  # the bonnet is static
                err, base = _warp_back_errors(
                    on_disk[f], on_disk[f + df], flow, surfaces[t], surfaces[t1]
                )
                assert len(err) > 0.4 * SIZE[0] * SIZE[1]
                errors.append(err)
                baselines.append(base)
        # between raw frames it is the shapes' video's flow, but for the bonnet
        for t in range(NUM_RAW_FRAMES - 1):
            shown = video.layers[t] >= 0
            flow = exact_flow(video, t, t + 1)
            assert np.array_equal(flow[shown], video.video.flows[t][shown])
    err, base = np.concatenate(errors), np.concatenate(baselines)
    # only bilinear interpolation of the smooth textures remains
    assert err.mean() < 1.0 and np.percentile(err, 99) < 4.0, (err.mean(), np.percentile(err, 99))
    assert base.mean() > 5 * err.mean()


def test_dataset_catalog_and_metadata(vps, tmp_path):
    name, out_dir, gt_json, data = vps
    dicts = DatasetCatalog.get(name)
    assert [d["image_id"] for d in dicts] == [im["id"] for im in data["images"]]
    assert [(d["video_id"], d["frame_idx"], d["length"]) for d in dicts] == [
        (f"{v + 1:04d}", f, 6) for v in range(NUM_VIDEOS) for f in range(6)
    ]
    meta = MetadataCatalog.get(name)
    contiguous = {
        **meta.thing_dataset_id_to_contiguous_id,
        **meta.stuff_dataset_id_to_contiguous_id,
    }
    for d, ann in zip(dicts, data["annotations"]):
        assert os.path.isfile(d["file_name"]) and os.path.isfile(d["pan_seg_file_name"])
        assert [(s["id"], s["category_id"], s["isthing"]) for s in d["segments_info"]] == [
            (s["id"], contiguous[s["category_id"]], s["category_id"] in THING_IDS)
            for s in ann["segments_info"]
        ]
    assert (meta.evaluator_type, meta.frames_per_video) == ("cityscapes_vps", 6)
    assert meta.flow_root == os.path.join(out_dir, "val", "flow")
    # the metadata is what the Cityscapes-VPS registration gives the same files
    other = f"_test_vps_files_{uuid.uuid4().hex[:8]}"
    register_cityscapes_vps(other, gt_json, os.path.join(out_dir, "val", "img"))
    try:
        expected = MetadataCatalog.get(other).as_dict()
        extra = {"raw_image_root", "flow_root", "flow_prev_root"}
        got = {k: v for k, v in meta.as_dict().items() if k not in extra}
        assert {**got, "name": other} == expected
        assert DatasetCatalog.get(other) == dicts
    finally:
        DatasetCatalog.remove(other)
        MetadataCatalog.remove(other)


def test_vpq_of_the_gt_against_itself_is_100(vps, tmp_path):
    name, out_dir, gt_json, data = vps
    submit = tmp_path / "submit"
    os.makedirs(submit / "pan_pred")
    truth = os.path.join(out_dir, "val", "panoptic_video")
    annotations = []
    for image, ann in zip(data["images"], data["annotations"]):
        shutil.copyfile(
            os.path.join(truth, ann["file_name"]), submit / "pan_pred" / f"{image['id']}.png"
        )
        annotations.append({"image_id": image["id"], "file_name": f"{image['id']}.png",
                            "segments_info": ann["segments_info"]})  # fmt: skip
    with open(submit / "pred.json", "w") as f:
        json.dump({"annotations": annotations}, f)
    results, stat = vpq_compute(
        submit_dir=str(submit), truth_dir=truth, pan_gt_json_file=gt_json, return_stats=True
    )
    for k in (0, 5, 10, 15, "final"):
        assert results[k] == pytest.approx({"All": 100, "Things": 100, "Stuff": 100}), k
    assert stat.id_switches == 0
    # the same through the registered dataset's evaluator, from per-frame model outputs
    evaluator = VPQEvaluator(name, distributed=False)
    evaluator.reset()
    for d in DatasetCatalog.get(name):
        ids = torch.as_tensor(read_panoptic_png(d["pan_seg_file_name"]).astype(np.int32))
        segments = [{"id": s["id"], "category_id": s["category_id"], "isthing": s["isthing"]}
                    for s in d["segments_info"]]  # fmt: skip
        evaluator.process([d], [{"panoptic_seg": (ids, segments)}])
    vpq = evaluator.evaluate()["vpq"]
    assert vpq["VPQ"] == vpq["VPQ_th"] == vpq["VPQ_st"] == pytest.approx(100)
    assert vpq["ID_switches"] == 0


def test_builtins():
    assert sorted(BUILTIN_PANOPTIC_VIDEOS) == ["synth_vps_test", "synth_vps_train", "synth_vps_val"]
    expected = {
        "synth_vps_train": (24, "train"),
        "synth_vps_val": (8, "val"),
        "synth_vps_test": (32, "val"),
    }
    seeds = [seed for _, seed, _ in BUILTIN_PANOPTIC_VIDEOS.values()]
    assert len(set(seeds)) == len(seeds)  # distinct videos in every split
    for name, (num_videos, _, split) in BUILTIN_PANOPTIC_VIDEOS.items():
        assert (num_videos, split) == expected[name]
        meta = MetadataCatalog.get(name)
        assert (meta.evaluator_type, meta.frames_per_video) == ("cityscapes_vps", 6)
        assert meta.thing_classes[-3:] == [c["name"] for c in STUFF_CATEGORIES]
        assert meta.panoptic_json.endswith(
            os.path.join("synth_vps", name, f"panoptic_gt_{split}_city_vps.json")
        )
        assert synthetic_dataset_dir(name).endswith(os.path.join("synth_vps", name))
