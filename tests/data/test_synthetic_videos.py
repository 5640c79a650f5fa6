"""Synthetic videos (d2ext.data.synthetic.videos): determinism, exact flow, the events the
generator promises, the YouTube-VIS files and the per-frame / per-clip datasets built on them.

Small variants (96x128 or 64x96 frames, a few videos) under unique names in a tmp dir."""

import filecmp
import json
import os
import uuid

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

import d2ext  # noqa: F401  (registration)
from d2ext.data.synthetic import (
    BUILTIN_DATASETS,
    SyntheticSpec,
    builtin_spec,
    ensure_synthetic_generated,
    generate,
    register_synthetic_videos,
    synthetic_dataset_dir,
)
from d2ext.data.synthetic.categories import THING_CATEGORIES
from d2ext.data.synthetic.videos import render_video

SIZE = (64, 96)
NUM_VIDEOS, NUM_FRAMES = 6, 5  # video 4 has all its objects enter from outside


def _interior(instance_map):
    """Pixels whose 3x3 neighbourhood is one layer (image borders count as another)."""
    out = np.zeros(instance_map.shape, bool)
    kernel = np.ones((3, 3), np.uint8)
    for k in np.unique(instance_map):
        layer = (instance_map == k).astype(np.uint8)
        out |= cv2.erode(layer, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0
    return out


def _warp_back_errors(frame_t, frame_t1, flow, inst_t, inst_t1):
    """|frame t+1 bilinearly sampled at p + flow(p) - frame t| (max over RGB) on the pixels
    visible in both frames away from layer edges, and the same without the flow."""
    h, w = inst_t.shape
    xx, yy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    f0, f1 = frame_t.astype(np.float32), frame_t1.astype(np.float32)
    warped = cv2.remap(f1, xx + flow[..., 0], yy + flow[..., 1], cv2.INTER_LINEAR)
    qx = np.floor(xx + 0.5 + flow[..., 0]).astype(int)
    qy = np.floor(yy + 0.5 + flow[..., 1]).astype(int)
    inside = (qx >= 0) & (qy >= 0) & (qx < w) & (qy < h)
    qx, qy = np.clip(qx, 0, w - 1), np.clip(qy, 0, h - 1)
    valid = inside & _interior(inst_t) & _interior(inst_t1)[qy, qx] & (inst_t1[qy, qx] == inst_t)
    err = np.abs(warped - f0).max(-1)[valid]
    return err, np.abs(f1 - f0).max(-1)[valid]


def test_render_deterministic_per_video():
    a, b = render_video(3, 2, 4, *SIZE, 5), render_video(3, 2, 4, *SIZE, 5)
    for key in ("frames", "instance_maps", "flows", "full_areas"):
        assert np.array_equal(getattr(a, key), getattr(b, key))
    assert not np.array_equal(a.frames, render_video(3, 1, 4, *SIZE, 5).frames)
    assert not np.array_equal(a.frames, render_video(4, 2, 4, *SIZE, 5).frames)


def test_flow_warps_next_frame_back_onto_frame():
    errors, baselines = [], []
    for index in range(4):
        video = render_video(11, index, 6, 96, 128, 6)
        t_count, h, w = video.instance_maps.shape
        assert video.flows.shape == (t_count - 1, h, w, 2) and video.flows.dtype == np.float32
        for t in range(t_count - 1):
            args = (video.frames[t], video.frames[t + 1], video.flows[t])
            err, base = _warp_back_errors(*args, video.instance_maps[t], video.instance_maps[t + 1])
            assert len(err) > 0.6 * h * w
            errors.append(err)
            baselines.append(base)
    err, base = np.concatenate(errors), np.concatenate(baselines)
    # only bilinear interpolation of the smooth textures (periods >= 5 px) remains
    assert err.mean() < 1.0 and np.percentile(err, 99) < 3.0 and err.max() < 16
    assert base.mean() > 5 * err.mean()


def test_flow_is_the_forward_map_of_the_visible_layer():
    video = render_video(5, 0, 3, *SIZE, 6)
    layers = [video.background] + [o.motion for o in video.objects]
    px, py = np.meshgrid(np.arange(SIZE[1]) + 0.5, np.arange(SIZE[0]) + 0.5)
    for t in range(2):
        inst, flow = video.instance_maps[t], video.flows[t]
        for k in np.unique(inst):
            sel = inst == k
            # the surface point under p in frame t has the same texture coordinates at p + flow
            u0, v0 = layers[k].to_texture(t, px[sel], py[sel])
            u1, v1 = layers[k].to_texture(
                t + 1, px[sel] + flow[sel][:, 0], py[sel] + flow[sel][:, 1]
            )
            assert np.abs(u1 - u0).max() < 1e-3 and np.abs(v1 - v0).max() < 1e-3


def test_videos_have_the_promised_events():
    """Over a few videos: objects entering, leaving, occluded (also fully), frames without
    objects, spins, scale changes, slow and fast motion, every category."""
    events, speeds, categories = set(), [], set()
    for index in range(12):
        video = render_video(71, index, 12, 96, 128, 6)
        for k, obj in enumerate(video.objects, start=1):
            visible = (video.instance_maps == k).sum((1, 2))
            full = video.full_areas[k - 1]
            seen = np.flatnonzero(visible)
            categories.add(obj.category_id)
            speeds.append(np.linalg.norm(np.diff(obj.motion.centers, axis=0), axis=1).mean())
            if len(seen) and seen[0] > 0 and full[seen[0] - 1] == 0:
                events.add("enters")
            if len(seen) and seen[-1] < 11 and full[seen[-1] + 1] == 0:
                events.add("leaves")
            if ((visible < full) & (visible > 0)).any():
                events.add("partly occluded")
            if ((visible == 0) & (full > 0)).any():
                events.add("fully occluded")
            if abs(obj.motion.angles[-1]) > 0.5:
                events.add("spins")
            if max(obj.motion.scales) > 1.3 or min(obj.motion.scales) < 0.75:
                events.add("scales")
        if (video.instance_maps == 0).all((1, 2)).any():
            events.add("frame without objects")
    assert events == {"enters", "leaves", "partly occluded", "fully occluded", "spins",
                      "scales", "frame without objects"}  # fmt: skip
    assert min(speeds) < 1.0 and max(speeds) > 8.0
    assert categories == {c["id"] for c in THING_CATEGORIES}
    assert not render_video(71, 4, 12, 96, 128, 6).instance_maps[0].any()


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synth_videos"))
    name = f"_test_videos_{uuid.uuid4().hex[:8]}"
    spec = register_synthetic_videos(name, root, NUM_VIDEOS, SIZE, seed=9, num_frames=NUM_FRAMES)
    assert ensure_synthetic_generated(name + "_clips") == [name + "_clips"]
    return name, spec, synthetic_dataset_dir(name)


def test_files_are_youtube_vis_with_exact_ground_truth(videos):
    name, spec, out_dir = videos
    assert out_dir.endswith(os.path.join("synth_videos", name))
    with open(os.path.join(out_dir, "instances.json")) as f:
        data = json.load(f)
    assert [v["id"] for v in data["videos"]] == list(range(1, NUM_VIDEOS + 1))
    assert {c["id"] for c in data["categories"]} == {c["id"] for c in THING_CATEGORIES}
    assert [a["id"] for a in data["annotations"]] == list(range(1, len(data["annotations"]) + 1))
    jpeg_errors, jpeg_baselines = [], []
    for v in data["videos"]:
        assert (v["height"], v["width"], v["length"]) == (*SIZE, NUM_FRAMES)
        folder = f"{v['id'] - 1:04d}"
        assert v["file_names"] == [f"{folder}/{t:05d}.jpg" for t in range(NUM_FRAMES)]
        video = render_video(9, v["id"] - 1, NUM_FRAMES, *SIZE, spec.max_objects)
        anns = [a for a in data["annotations"] if a["video_id"] == v["id"]]
        shown = [k for k in range(1, len(video.objects) + 1) if (video.instance_maps == k).any()]
        assert [a["category_id"] for a in anns] == [video.objects[k - 1].category_id for k in shown]
        for ann, k in zip(anns, shown):
            assert ann["iscrowd"] == 0
            for t in range(NUM_FRAMES):
                mask = video.instance_maps[t] == k
                seg, box, area = (ann[key][t] for key in ("segmentations", "bboxes", "areas"))
                if not mask.any():
                    assert seg is box is area is None
                    continue
                assert isinstance(seg["counts"], list)  # uncompressed, as the official files
                assert np.array_equal(mask_util.decode(mask_util.frPyObjects(seg, *SIZE)), mask)
                assert area == mask.sum() and box == mask_util.toBbox(mask_util.encode(
                    np.asfortranarray(mask.astype(np.uint8)))).astype(int).tolist()  # fmt: skip
        images = []
        for t, file_name in enumerate(v["file_names"]):
            images.append(np.asarray(Image.open(os.path.join(out_dir, "JPEGImages", file_name))))
            assert np.abs(images[t].astype(int) - video.frames[t]).mean() < 6  # JPEG, 4:2:0
            flow_file = os.path.join(out_dir, "Flow", file_name[:-4] + ".npy")
            if t + 1 < NUM_FRAMES:
                assert np.array_equal(np.load(flow_file), video.flows[t])
            else:
                assert not os.path.exists(flow_file)
        for t in range(NUM_FRAMES - 1):
            flow = np.load(os.path.join(out_dir, "Flow", v["file_names"][t][:-4] + ".npy"))
            maps = video.instance_maps[t : t + 2]
            err, base = _warp_back_errors(images[t], images[t + 1], flow, *maps)
            jpeg_errors.append(err)
            jpeg_baselines.append(base)
    # the files warp as well, up to JPEG's error
    err, base = np.concatenate(jpeg_errors), np.concatenate(jpeg_baselines)
    assert err.mean() < 5 and base.mean() > 2 * err.mean()


def test_per_frame_and_per_clip_datasets(videos):
    name, _, out_dir = videos
    frames, clips = DatasetCatalog.get(name), DatasetCatalog.get(name + "_clips")
    assert len(frames) == NUM_VIDEOS * NUM_FRAMES and len(clips) == NUM_VIDEOS
    assert [f["image_id"] for f in frames] == list(range(1, len(frames) + 1))
    assert [f for c in clips for f in c["frames"]] == frames
    for clip in clips:
        assert clip["file_names"] == [f["file_name"] for f in clip["frames"]]
        for t, f in enumerate(clip["frames"]):
            assert (f["video_id"], f["frame_idx"], f["length"]) == (clip["video_id"], t, NUM_FRAMES)
            assert f["video_frames"] == clip["file_names"] and os.path.isfile(f["file_name"])
            if t + 1 < NUM_FRAMES:
                assert f["flow_file"] == os.path.join(
                    out_dir, "Flow", f"{clip['video_id'] - 1:04d}", f"{t:05d}.npy"
                )
                assert os.path.isfile(f["flow_file"])
            else:
                assert f["flow_file"] is None
    tracks = {a["track_id"] for f in frames for a in f["annotations"]}
    assert tracks == set(range(1, len(tracks) + 1))
    frame_meta, clip_meta = MetadataCatalog.get(name), MetadataCatalog.get(name + "_clips")
    assert (frame_meta.evaluator_type, clip_meta.evaluator_type) == ("coco", "youtube_vis")
    assert frame_meta.thing_classes == [c["name"] for c in THING_CATEGORIES]
    assert frame_meta.flow_root == os.path.join(out_dir, "Flow")


def test_generated_bytes_deterministic_and_one_frame_videos(tmp_path):
    spec = SyntheticSpec("videos", 2, SIZE, 13, 4, num_frames=3)
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert generate(spec, a) and generate(spec, b) and not generate(spec, a)
    for rel in ("instances.json", "JPEGImages/0001/00002.jpg", "Flow/0001/00001.npy"):
        assert filecmp.cmp(os.path.join(a, rel), os.path.join(b, rel), shallow=False)
    one = SyntheticSpec("videos", 2, SIZE, 13, 4, num_frames=1)
    generate(one, str(tmp_path / "one"))
    assert os.listdir(tmp_path / "one" / "Flow" / "0000") == []
    with pytest.raises(ValueError, match="num_frames must be >= 1"):
        SyntheticSpec("videos", 2, SIZE, 13, num_frames=0)
    with pytest.raises(ValueError, match="num_frames is for videos"):
        SyntheticSpec("shapes", 2, SIZE, 13, num_frames=3)
    assert "num_frames" not in SyntheticSpec("shapes", 2, SIZE, 13).to_json()


def test_builtins():
    names = sorted(n for n, (kind, _, _) in BUILTIN_DATASETS.items() if kind == "videos")
    assert names == [f"synth_videos_{s}" for s in ("mini_train", "mini_val", "train", "val")]
    specs = {n: builtin_spec(n) for n in names}
    assert {(s.num_images, s.num_frames) for n, s in specs.items() if "mini" not in n} == {
        (24, 12), (8, 12)
    }  # fmt: skip
    assert {s.image_size for s in specs.values()} == {(160, 224)}
    for n in names:
        assert n + "_clips" in DatasetCatalog.list()
        assert MetadataCatalog.get(n + "_clips").evaluator_type == "youtube_vis"
    assert ensure_synthetic_generated(["synth_videos_mini_val_clips"]) == [
        "synth_videos_mini_val_clips"
    ]
    clips = DatasetCatalog.get("synth_videos_mini_val_clips")
    assert [c["length"] for c in clips] == [12, 12]
