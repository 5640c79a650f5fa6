"""tools/train_flow.py: RAFT-small trained on the exact flow of a Cityscapes-VPS-layout dataset
(the synthetic panoptic videos), for VPSNet's MODEL.VPSNET.FLOW_WEIGHTS."""

import json
import os
import sys
import uuid
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog

from d2ext.data.synthetic import ensure_synthetic_generated, synthetic_dataset_dir
from d2ext.data.synthetic.register_panoptic_videos import register_synthetic_panoptic_videos
from d2ext.modeling.common import RAFTFlow, load_flow_weights
from d2ext.modeling.common.warp import warp_features

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))
import train_flow  # noqa: E402  (tools/ is not a package)

SIZE = (128, 128)  # RAFT's correlation pyramid needs >= 128


@pytest.fixture(scope="module")
def vps(tmp_path_factory):
    """A registered one-video synthetic panoptic dataset (6 annotated frames) and its folder."""
    root = str(tmp_path_factory.mktemp("synth_vps_flow"))
    name = f"_test_flow_vps_{uuid.uuid4().hex[:8]}"
    register_synthetic_panoptic_videos(name, root, 1, SIZE, seed=4, max_objects=3)
    assert ensure_synthetic_generated(name) == [name]
    yield name, synthetic_dataset_dir(name)
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def test_pairs_are_the_neighbouring_frames_and_their_exact_flow(vps):
    name, _ = vps
    dicts = DatasetCatalog.get(name)
    pairs = train_flow.load_flow_pairs(name)
    assert len(pairs) == 2 * (len(dicts) - 1) == 10  # 6 frames: 5 next + 5 previous
    meta = MetadataCatalog.get(name)
    # sorted by frame, next before previous: frame 0 -> 1, frame 1 -> 2, frame 1 -> 0, ...
    image1, image2, flow = pairs[0]
    assert np.array_equal(
        flow, np.load(os.path.join(meta.flow_root, dicts[0]["image_id"] + ".npy"))
    )
    image1, image2, flow = pairs[2]
    prev = np.load(os.path.join(meta.flow_prev_root, dicts[1]["image_id"] + ".npy"))
    assert np.array_equal(flow, prev)
    assert image1.shape == (*SIZE, 3) and flow.shape == (*SIZE, 2)
    assert np.abs(flow).max() > 1.0  # the camera and the shapes move


def test_flip_keeps_the_flow_exact(vps):
    """Mirroring both frames and negating x: warping the mirrored second frame with the
    mirrored flow is the mirror of warping the original (pixel units, pixel centres)."""
    pairs = train_flow.load_flow_pairs(vps[0])[:2]
    im1, im2, flow = train_flow._to_batch(pairs, [False, False])
    fim1, fim2, fflow = train_flow._to_batch(pairs, [True, True])
    assert torch.equal(fim1, im1.flip(-1)) and torch.equal(fim2, im2.flip(-1))
    assert torch.equal(fflow[:, 0], -flow[:, 0].flip(-1))
    assert torch.equal(fflow[:, 1], flow[:, 1].flip(-1))
    kwargs = dict(flow_units="pixels", align_corners=False)
    warped = warp_features(im2, flow, **kwargs)
    fwarped = warp_features(fim2, fflow, **kwargs)
    assert torch.allclose(fwarped, warped.flip(-1), atol=1e-2)  # float rounding of the grid
    # and the exact flow does warp the second frame onto the first (most pixels visible in both)
    close = (warped - im1).abs().amax(1) < 10
    assert close.float().mean() > 0.8


def test_sequence_loss_weights_later_steps_more():
    gt = torch.zeros(1, 2, 2, 2)
    preds = [torch.full_like(gt, 1.0), torch.full_like(gt, 2.0), torch.full_like(gt, 4.0)]
    # 0.8^2 * 1 + 0.8 * 2 + 1 * 4
    assert train_flow.sequence_loss(preds, gt).item() == pytest.approx(0.64 + 1.6 + 4.0)


def test_train_saves_weights_vpsnet_loads(vps, tmp_path):
    name, _ = vps
    out = tmp_path / "raft"
    args = SimpleNamespace(
        dataset=name, eval_dataset=name, iters=2, batch_size=2, lr=4e-4,
        num_flow_updates=3, seed=0, output=str(out),
    )  # fmt: skip
    results = train_flow.main(args)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(results))
    # zero flow's error is the mean flow magnitude over the pairs
    flows = [p[2] for p in train_flow.load_flow_pairs(name)]
    expected = np.mean([np.linalg.norm(f, axis=-1).mean() for f in flows])
    assert results["after"]["zero_flow_epe"] == pytest.approx(expected, rel=1e-5)
    assert results["after"]["num_pairs"] == 10
    assert results["before"]["epe"] != results["after"]["epe"]  # two steps changed the weights
    # the file is what MODEL.VPSNET.FLOW_WEIGHTS loads
    state = torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)
    net = RAFTFlow(num_flow_updates=3)
    load_flow_weights(net, str(out / "model_final.pth"))
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())
    # and what RAFTFlow(weights=...) (a LazyConfig's flow net) loads
    built = RAFTFlow(num_flow_updates=3, weights=str(out / "model_final.pth"))
    assert all(torch.equal(v, built.state_dict()[k]) for k, v in state.items())
    # and what a VPSNet config with MODEL.VPSNET.FLOW_WEIGHTS builds
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    from d2ext.config import add_d2ext_config

    cfg = get_cfg()
    add_d2ext_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs/VPSNet/vpsnet_R_18_synth.yaml"))
    cfg.MODEL.VPSNET.FLOW_NET = "raft"
    cfg.MODEL.VPSNET.FLOW_WEIGHTS = str(out / "model_final.pth")
    vpsnet = build_model(cfg)
    assert all(torch.equal(v, vpsnet.flow_net.state_dict()[k]) for k, v in state.items())
    with pytest.raises(KeyError, match="do not fit RAFT-small"):
        torch.save({"model": {"conv.weight": torch.zeros(1)}}, tmp_path / "other.pth")
        RAFTFlow(weights=str(tmp_path / "other.pth"))


def test_bad_datasets_are_named(vps, tmp_path):
    name, out_dir = vps
    other = f"_test_flow_noflow_{uuid.uuid4().hex[:8]}"
    DatasetCatalog.register(other, lambda: DatasetCatalog.get(name))
    try:
        with pytest.raises(ValueError, match=f"{other}.*flow_root"):
            train_flow.load_flow_pairs(other)
        MetadataCatalog.get(other).set(
            flow_root=str(tmp_path), flow_prev_root=MetadataCatalog.get(name).flow_prev_root
        )
        first = DatasetCatalog.get(name)[0]["image_id"]
        with pytest.raises(FileNotFoundError, match=f"next flow for {first}"):
            train_flow.load_flow_pairs(other)
    finally:
        DatasetCatalog.remove(other)
        MetadataCatalog.remove(other)
    still = f"_test_flow_images_{uuid.uuid4().hex[:8]}"
    DatasetCatalog.register(still, lambda: [{"file_name": "a.png", "image_id": 1}])
    try:
        with pytest.raises(ValueError, match="a.png has no video_id"):
            train_flow.load_flow_pairs(still)
    finally:
        DatasetCatalog.remove(still)
