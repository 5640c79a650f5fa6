"""d2ext.data.mappers.YolactEdgePairMapper: key-frame choice, one augmentation for both frames,
the ground-truth flow carried through flips and resizes (transform_flow), and the video edge
cases (first frames, one-frame videos, frames without objects, real data without flow).

Hand-made videos are crops of one canvas moving by a known integer step per frame, saved as PNG
(lossless), so the flow is known exactly and alignment can be checked pixel for pixel."""

import copy
import os
import pickle

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
import torch.nn.functional as F
from detectron2.data import transforms as T
from detectron2.structures import BoxMode
from PIL import Image
from yolact_tiny import tiny_cfg

from d2ext.data import build_train_mapper
from d2ext.data.mappers import YolactEdgePairMapper, transform_flow
from d2ext.data.synthetic.videos import write_synthetic_videos
from d2ext.data.youtube_vis import (
    load_youtube_vis_json,
    write_youtube_vis_json,
    youtube_vis_annotation,
)
from d2ext.modeling.common.warp import warp_features

H, W = 16, 24  # frames; the mapper stretches them to S x S


def _cfg(offsets, size=48, flip="horizontal", ssd=False):
    cfg = tiny_cfg(size=size)
    cfg.MODEL.YOLACT.SSD_AUGMENTATION = ssd
    cfg.INPUT.RANDOM_FLIP = flip
    cfg.MODEL.YOLACT_EDGE.FRAME_OFFSETS = list(offsets)
    cfg.INPUT.DATASET_MAPPER_NAME = "YolactEdgePairMapper"
    return cfg


def _canvas(h, w, seed=0, smooth=False):
    rng = np.random.default_rng(seed)
    if not smooth:
        return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    out = np.zeros((h, w, 3))
    for c in range(3):
        kx, ky, phase = rng.uniform(0.04, 0.1), rng.uniform(0.04, 0.1), rng.uniform(0, 6)
        out[..., c] = 128 + 100 * np.sin(kx * xx + phase) * np.cos(ky * yy)
    return out.round().astype(np.uint8)


def _rle(mask):
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(mask.shape), "counts": rle["counts"].decode()}


def _shifted_video(tmp_path, num_frames, step=(2, 1), h=H, w=W, static_object=True, **canvas):
    """Per-frame dicts of a video whose content moves by ``step`` (dx, dy) px per frame: frame
    t + 1 at (x, y) shows frame t at (x - dx, y - dy), so the t -> t+1 flow is ``step``
    everywhere. One annotated object (a fixed rectangle) when ``static_object``."""
    dx, dy = step
    pad = 8 * max(num_frames, 1)
    canvas_img = _canvas(h + 2 * pad, w + 2 * pad, **canvas)
    folder = tmp_path / f"video_{num_frames}_{dx}_{dy}"
    os.makedirs(folder, exist_ok=True)
    paths = []
    for t in range(num_frames):
        y0, x0 = pad - t * dy, pad - t * dx
        paths.append(str(folder / f"{t:05d}.png"))
        Image.fromarray(canvas_img[y0 : y0 + h, x0 : x0 + w]).save(paths[-1])
    for t in range(num_frames - 1):
        np.save(str(folder / f"{t:05d}.npy"), np.tile(np.float32(step), (h, w, 1)))
    mask = np.zeros((h, w), bool)
    mask[4:12, 6:14] = True
    anns = []
    if static_object:
        anns = [
            {
                "bbox": [6.0, 4.0, 8.0, 8.0],
                "bbox_mode": BoxMode.XYWH_ABS,
                "segmentation": _rle(mask),
                "category_id": 1,
                "iscrowd": 0,
                "track_id": 1,
            }
        ]
    return [
        {
            "file_name": paths[t],
            "height": h,
            "width": w,
            "image_id": t + 1,
            "video_id": 1,
            "frame_idx": t,
            "length": num_frames,
            "video_frames": paths,
            "flow_file": str(folder / f"{t:05d}.npy") if t + 1 < num_frames else None,
            "annotations": copy.deepcopy(anns),
        }
        for t in range(num_frames)
    ]


def _map(mapper, record, seed):
    np.random.seed(seed)
    return mapper(copy.deepcopy(record))


# ---------------------------------------------------------------- transform_flow (hand-built)


def test_transform_flow_flip_resize_crop_pad_by_hand():
    # x flow = column index, y flow = 10 * row index: every output value tells where it came from
    yy, xx = np.mgrid[0:4, 0:6].astype(np.float32)
    flow = np.stack([xx, 10 * yy], -1)

    out = transform_flow(flow, T.TransformList([T.HFlipTransform(6)]))
    np.testing.assert_array_equal(out[..., 0], -xx[:, ::-1])  # flipped and x negated
    np.testing.assert_array_equal(out[..., 1], 10 * yy)
    out = transform_flow(flow, T.TransformList([T.VFlipTransform(4)]))
    np.testing.assert_array_equal(out[..., 1], -10 * yy[::-1])
    np.testing.assert_array_equal(out[..., 0], xx)

    crop = T.CropTransform(1, 2, 3, 2, orig_w=6, orig_h=4)
    np.testing.assert_array_equal(transform_flow(flow, T.TransformList([crop])), flow[2:4, 1:4])
    pad = T.PadTransform(2, 1, 0, 3, 6, 4, pad_value=128.0, seg_pad_value=255)
    out = transform_flow(flow, T.TransformList([pad]))
    assert out.shape == (8, 8, 2) and out.dtype == np.float32
    np.testing.assert_array_equal(out[1:5, 2:8], flow)
    assert not out[0].any() and not out[5:].any() and not out[:, :2].any()  # static padding

    # resize 4x6 -> 12x12 (sy = 3, sx = 2) of a constant flow: values scale by (sx, sy)
    const = np.tile(np.float32([1.5, -2.0]), (4, 6, 1))
    resize = T.ResizeTransform(4, 6, 12, 12, Image.BILINEAR)
    out = transform_flow(const, T.TransformList([T.ColorTransform(lambda im: im * 2), resize]))
    np.testing.assert_allclose(out, np.tile(np.float32([3.0, -6.0]), (12, 12, 1)), rtol=1e-6)
    # ... and of a linear field f(x) = x + 0.5 (at pixel centres): away from the border,
    # f'(x') = sx * f((x' + 0.5) / sx - 0.5) = x' + 0.5 exactly
    lin = np.stack([xx + 0.5, np.zeros_like(xx)], -1)
    out = transform_flow(lin, T.TransformList([resize]))
    np.testing.assert_allclose(out[:, 1:11, 0], np.tile(np.arange(1, 11) + 0.5, (12, 1)), atol=1e-5)

    # flip after resize: x scaled then negated; the order of the list is respected
    out = transform_flow(const, T.TransformList([resize, T.HFlipTransform(12)]))
    np.testing.assert_allclose(out, np.tile(np.float32([-3.0, -6.0]), (12, 12, 1)), rtol=1e-6)

    with pytest.raises(ValueError, match="RotationTransform"):
        transform_flow(flow, T.TransformList([T.RotationTransform(4, 6, 30)]))


# ---------------------------------------------------------------- the flow stage (offset -1)


def test_flow_stage_pairs_frame_with_next_and_aligns_under_flip_and_resize(tmp_path):
    """FRAME_OFFSETS [-1]: key = the next frame, flow = the stored t -> t+1 flow, in pixels of
    the S x S output: (2, 1) px on 24x16 -> 48x48 is (4, 3), (-4, 3) when flipped; the key frame
    sampled at p + flow is the current frame, pixel for pixel."""
    video = _shifted_video(tmp_path, 3, step=(2, 1))
    mapper = build_train_mapper(_cfg([-1]))
    assert isinstance(mapper, YolactEdgePairMapper) and mapper.frame_offsets == [-1]
    seen = set()
    for seed in range(12):
        out = _map(mapper, video[0], seed)
        assert out["frame_offset"] == -1 and out["reference_file_name"] == video[1]["file_name"]
        image, ref, flow = out["image"], out["reference_image"], out["flow"]
        assert image.shape == ref.shape == (3, 48, 48) and image.dtype == ref.dtype
        assert flow.shape == (2, 48, 48) and flow.dtype == torch.float32
        fx = float(flow[0, 0, 0])
        assert fx in (4.0, -4.0)
        torch.testing.assert_close(flow, torch.tensor([fx, 3.0]).view(2, 1, 1).expand(2, 48, 48))
        seen.add(fx)
        # current (x, y) == key (x + fx, y + 3) where both avoid the band the resize clamps
        m = 4
        xs = torch.arange(m, 48 - m)
        xs = xs[(xs + fx >= m) & (xs + fx < 48 - m)]
        ys = torch.arange(m, 48 - m - 3)
        torch.testing.assert_close(
            image[:, ys[:, None], xs], ref[:, ys[:, None] + 3, xs + int(fx)], rtol=0, atol=0
        )
        # the same through the warp the model uses (grid_sample at exact pixel positions), where
        # p + flow also avoids the key frame's border band
        warped = warp_features(ref[None].float(), flow[None], flow_units="pixels")[0]
        inner = (slice(None), slice(2 * m, -2 * m), slice(2 * m, -2 * m))
        torch.testing.assert_close(warped[inner], image[inner].float(), atol=1e-3, rtol=0)
        # ground truth of the current frame, flipped with it
        box = out["instances"].gt_boxes.tensor[0].tolist()
        assert box == ([12.0, 12.0, 28.0, 36.0] if fx > 0 else [20.0, 12.0, 36.0, 36.0])
    assert seen == {4.0, -4.0}  # both flip outcomes were drawn

    # the last frame has no next frame: it pairs with itself, no flow
    out = _map(mapper, video[2], 0)
    assert out["frame_offset"] == 0 and "flow" not in out
    torch.testing.assert_close(out["reference_image"], out["image"])


def _warp_error(key, current, flow, margin):
    """Mean over the inner pixels of max over channels |key warped with flow - current|."""
    diff = warp_features(key[None].float(), flow[None], flow_units="pixels") - current.float()
    return float(diff[0].abs().amax(0)[margin:-margin, margin:-margin].mean())


def test_stored_synthetic_flow_at_offset_minus_one(tmp_path):
    """A synthetic video's stored flow through the mapper: exactly the resized and scaled file;
    warping the key frame with it matches the current frame as well as the stored flow does on
    the original frames (the residual is JPEG and layer edges), and far better than no flow or
    the reversed flow (so the direction is the one the model's warp reads)."""
    root = tmp_path / "synth"
    os.makedirs(root)
    write_synthetic_videos(str(root), 2, 3, (48, 64), seed=3, max_objects=3)
    frames = load_youtube_vis_json(
        str(root / "instances.json"), str(root / "JPEGImages"), str(root / "Flow")
    )
    mapper = build_train_mapper(_cfg([-1], size=96, flip="none"))
    for record in [f for f in frames if f["frame_idx"] < 2]:
        out = _map(mapper, record, 0)
        assert out["frame_offset"] == -1 and out["flow"].shape == (2, 96, 96)
        stored = torch.from_numpy(np.load(record["flow_file"])).permute(2, 0, 1)
        expected = F.interpolate(stored[None], size=(96, 96), mode="bilinear", align_corners=False)
        expected = expected[0] * torch.tensor([96 / 64, 96 / 48]).view(2, 1, 1)
        torch.testing.assert_close(out["flow"], expected)

        def read(path):
            return torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).transpose(2, 0, 1))

        key = read(record["video_frames"][record["frame_idx"] + 1])
        native = _warp_error(key, read(record["file_name"]), stored, 4)
        image, ref, flow = out["image"], out["reference_image"], out["flow"]
        with_flow = _warp_error(ref, image, flow, 6)
        assert with_flow <= 1.1 * native + 0.5, (with_flow, native)
        assert with_flow < 0.85 * _warp_error(ref, image, torch.zeros_like(flow), 6)
        assert with_flow < 0.8 * _warp_error(ref, image, -flow, 6)


# ---------------------------------------------------------------- the video stage (2..5)


def test_video_stage_offsets_clamp_at_the_start_and_are_seeded(tmp_path):
    video = _shifted_video(tmp_path, 8)
    mapper = build_train_mapper(_cfg([2, 3, 4, 5]))
    drawn = {}
    for idx in (7, 3, 1, 0):
        drawn[idx] = set()
        for seed in range(30):
            out = _map(mapper, video[idx], seed)
            o = out["frame_offset"]
            drawn[idx].add(o)
            assert out["reference_file_name"] == video[idx]["video_frames"][idx - o]
            assert "flow" not in out  # only the t -> t+1 flow of offset -1 is exact
    # uniform over the offsets whose key frame is in the video; clamped to frame 0 otherwise
    assert drawn == {7: {2, 3, 4, 5}, 3: {2, 3}, 1: {1}, 0: {0}}

    # deterministic given NumPy's seed (D2 seeds it per worker), offset and augmentation alike
    a, b = _map(mapper, video[7], 5), _map(mapper, video[7], 5)
    assert a["frame_offset"] == b["frame_offset"]
    for key in ("image", "reference_image"):
        assert torch.equal(a[key], b[key])
    assert torch.equal(a["instances"].gt_masks.tensor, b["instances"].gt_masks.tensor)
    pickle.dumps(mapper)  # after use too: DataLoader workers may receive it pickled

    test_mapper = YolactEdgePairMapper(_cfg([2, 3, 4, 5]), is_train=False)  # the registry's rule
    out = _map(test_mapper, video[7], 0)
    assert out["reference_image"].shape == out["image"].shape and "instances" not in out


def test_ssd_augmentation_is_shared_by_both_frames(tmp_path):
    """The original replays the current frame's augmentation seeds (photometric distortion,
    zoom-out, crop, mirror) on the key frame: identical frames stay identical, and a moving
    pair stays aligned by its transformed flow."""
    static = _shifted_video(tmp_path, 6, step=(0, 0))
    mapper = build_train_mapper(_cfg([2, 3, 4, 5], ssd=True))
    shapes = set()
    for seed in range(20):
        out = _map(mapper, static[5], seed)
        assert out["frame_offset"] in (2, 3, 4, 5)
        torch.testing.assert_close(out["reference_image"], out["image"], rtol=0, atol=0)
        shapes.add(round(float(out["image"].float().mean())))
    assert len(shapes) > 5  # the augmentation did vary

    moving = _shifted_video(tmp_path, 3, step=(2, 1), h=48, w=64, seed=1, smooth=True)
    mapper = build_train_mapper(_cfg([-1], size=64, ssd=True))
    for seed in range(12):
        out = _map(mapper, moving[0], seed)
        image, ref = out["image"][None].float(), out["reference_image"][None].float()
        flow = out["flow"][None]
        # the content (the zoom-out's padding has zero flow; the resize blends the two over
        # a pixel or two) whose flow lands on content too
        content = (flow.abs().sum(1, keepdim=True) > 0).float()
        content = -F.max_pool2d(-content, 5, stride=1, padding=2)
        valid = (content * warp_features(content, flow, flow_units="pixels"))[:, 0] > 0.999
        valid[:, :6] = valid[:, -6:] = valid[:, :, :6] = valid[:, :, -6:] = False
        assert valid.sum() > 50

        def err(f):
            diff = (warp_features(ref, f, flow_units="pixels") - image).abs().amax(1)
            return float(diff[valid].mean())

        assert err(flow) < 2.0 and err(flow) < 0.1 * err(-flow), (seed, err(flow), err(-flow))


# ---------------------------------------------------------------- edge cases


def test_one_frame_video_and_frame_without_objects(tmp_path):
    one = _shifted_video(tmp_path, 1)[0]
    assert one["flow_file"] is None
    for offsets in ([2, 3, 4, 5], [-1]):
        mapper = build_train_mapper(_cfg(offsets))
        out = _map(mapper, one, 0)
        assert out["frame_offset"] == 0 and "flow" not in out
        torch.testing.assert_close(out["reference_image"], out["image"])
        assert len(out["instances"]) == 1

    empty = _shifted_video(tmp_path, 4, static_object=False)
    out = _map(build_train_mapper(_cfg([-1])), empty[1], 0)
    inst = out["instances"]
    # empty Instances as YOLACTDatasetMapper gives them (D2 adds no gt_masks without annotations)
    assert len(inst) == 0 and inst.image_size == (48, 48) and inst.gt_boxes.tensor.shape == (0, 4)
    assert out["frame_offset"] == -1 and out["flow"].shape == (2, 48, 48)
    assert out["reference_image"].shape == (3, 48, 48)


def test_real_youtube_vis_dict_without_flow(tmp_path):
    """The loader's dicts for real YouTube-VIS (flow_file None, RLE from the json): pairs
    without "flow", ground truth of the current frame only."""
    folder = tmp_path / "JPEGImages" / "vid"
    os.makedirs(folder)
    names, masks = [], []
    for t in range(4):
        names.append(f"vid/{t:05d}.jpg")
        Image.fromarray(_canvas(H, W, seed=t)).save(str(tmp_path / "JPEGImages" / names[-1]))
        m = np.zeros((H, W), bool)
        m[2 : 6 + t, 3 : 9 + t] = True
        masks.append(m if t != 2 else None)  # absent in frame 2
    video = {"id": 7, "width": W, "height": H, "length": 4, "file_names": names}
    ann = youtube_vis_annotation(3, 7, 1, masks)
    json_file = str(tmp_path / "train.json")
    write_youtube_vis_json(json_file, [video], [ann], [{"id": 1, "name": "thing"}])
    frames = load_youtube_vis_json(json_file, str(tmp_path / "JPEGImages"))
    assert all(f["flow_file"] is None for f in frames)

    mapper = build_train_mapper(_cfg([-1], flip="none"))
    out = _map(mapper, frames[0], 0)
    assert out["frame_offset"] == -1 and "flow" not in out
    expected = torch.from_numpy(masks[0].repeat(3, 0).repeat(2, 1))  # 16x24 -> 48x48
    assert torch.equal(out["instances"].gt_masks.tensor[0], expected)
    assert out["instances"].gt_classes.tolist() == [0]
    out = _map(build_train_mapper(_cfg([2, 3, 4, 5], flip="none")), frames[2], 0)
    assert out["frame_offset"] == 2 and len(out["instances"]) == 0 and "flow" not in out


def test_bad_inputs_are_named(tmp_path):
    video = _shifted_video(tmp_path, 3)
    mapper = build_train_mapper(_cfg([-1]))
    still = {k: v for k, v in video[0].items() if k not in ("video_frames", "frame_idx")}
    with pytest.raises(KeyError, match=r"00000\.png.*\['frame_idx', 'video_frames'\]"):
        mapper(still)
    wrong = dict(video[0], frame_idx=5)
    with pytest.raises(ValueError, match="frame_idx 5 and length 3"):
        mapper(wrong)

    small = str(tmp_path / "small.png")
    Image.fromarray(_canvas(H // 2, W // 2)).save(small)
    resized = dict(video[0], video_frames=[video[0]["file_name"], small, small])
    with pytest.raises(ValueError, match="small.png.*size changes mid-video"):
        mapper(resized)

    bad_flow = str(tmp_path / "bad.npy")
    np.save(bad_flow, np.zeros((H, W, 3), np.float32))
    with pytest.raises(ValueError, match=r"bad\.npy.*\(16, 24, 2\)"):
        mapper(dict(video[0], flow_file=bad_flow))

    with pytest.raises(ValueError, match="FRAME_OFFSETS"):
        build_train_mapper(_cfg([]))
