"""Cityscapes-VPS loading (d2ext.data.cityscapes_vps) on the shared VPQ fixture's real layout:
per-frame dicts, metadata, DATASETS.REGISTER and the evaluator dispatch, malformed jsons."""

import json
import os
import shutil

import pytest
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog

import d2ext  # noqa: F401  (registration)
from d2ext.config import add_d2ext_config
from d2ext.data import DATASET_FORMATS, register_datasets
from d2ext.data.cityscapes_vps import gt_png_name, load_cityscapes_vps_json
from d2ext.evaluation import VPQEvaluator, build_evaluator
from d2ext.evaluation.panoptic_png import read_panoptic_png


@pytest.fixture
def layout(tmp_path, require_shared):
    """A writable copy of the fixture's ``cityscapes_vps`` folder with (empty) ``val/img``
    frames: (gt json, image root, panoptic root)."""
    root = str(tmp_path / "cityscapes_vps")
    shutil.copytree(
        require_shared("fixtures", "vpq", "cityscapes_vps"), root, copy_function=shutil.copyfile
    )
    for folder, _, _ in os.walk(root):
        os.chmod(folder, 0o755)
    gt_json = os.path.join(root, "panoptic_gt_val_city_vps.json")
    image_root = os.path.join(root, "val", "img")
    os.makedirs(image_root)
    with open(gt_json) as f:
        for image in json.load(f)["images"]:
            open(os.path.join(image_root, image["file_name"]), "wb").close()
    return gt_json, image_root, os.path.join(root, "val", "panoptic_video")


@pytest.fixture
def registered():
    names = []
    yield names
    for name in names:
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
        if name in MetadataCatalog.list():
            MetadataCatalog.remove(name)


def test_per_frame_dicts(layout):
    gt_json, image_root, panoptic_root = layout
    dicts = load_cityscapes_vps_json(gt_json, image_root, panoptic_root)
    with open(gt_json) as f:
        data = json.load(f)
    assert [d["image_id"] for d in dicts] == [im["id"] for im in data["images"]]
    assert [(d["video_id"], d["frame_idx"], d["length"]) for d in dicts] == [
        (v, t, 6) for v in ("0001", "0002") for t in range(6)
    ]
    isthing = {c["id"]: bool(c["isthing"]) for c in data["categories"]}
    for d, image, ann in zip(dicts, data["images"], data["annotations"]):
        assert d["file_name"] == os.path.join(image_root, image["file_name"])
        assert os.path.isfile(d["file_name"]) and (d["height"], d["width"]) == (64, 128)
        assert d["pan_seg_file_name"] == os.path.join(panoptic_root, ann["file_name"])
        assert os.path.basename(d["pan_seg_file_name"]) == gt_png_name(image["file_name"])
        ids = set(read_panoptic_png(d["pan_seg_file_name"]).ravel().tolist())
        assert {s["id"] for s in d["segments_info"]} <= ids
        for s, ref in zip(d["segments_info"], ann["segments_info"]):
            # Cityscapes-VPS's category ids 0-18 are contiguous already
            assert (
                s["category_id"] == ref["category_id"]
                and s["isthing"] == isthing[ref["category_id"]]
            )
            assert (s["id"], s["iscrowd"], s["area"]) == (ref["id"], ref["iscrowd"], ref["area"])
    assert "0001_0004_frankfurt_000000_000294_gtFine_color.png" in dicts[3]["pan_seg_file_name"]


def test_register_and_evaluator_dispatch(layout, registered, tmp_path):
    gt_json, image_root, panoptic_root = layout
    assert "cityscapes_vps" in DATASET_FORMATS
    registered.append("d2ext_test_cs_vps_val")
    # panoptic_root defaults to the panoptic_video folder beside image_root
    register_datasets([("d2ext_test_cs_vps_val", "cityscapes_vps", gt_json, image_root)])
    register_datasets([("d2ext_test_cs_vps_val", "cityscapes_vps", gt_json, image_root)])  # no-op
    meta = MetadataCatalog.get("d2ext_test_cs_vps_val")
    assert meta.evaluator_type == "cityscapes_vps" and meta.frames_per_video == 6
    assert meta.panoptic_root == panoptic_root and meta.panoptic_json == gt_json
    assert meta.thing_classes[11] == "person" and meta.stuff_classes[0] == "road"
    assert meta.thing_dataset_id_to_contiguous_id == {i: i for i in range(11, 19)}
    assert meta.stuff_dataset_id_to_contiguous_id == {i: i for i in range(11)}
    assert len(DatasetCatalog.get("d2ext_test_cs_vps_val")) == 12
    cfg = get_cfg()
    add_d2ext_config(cfg)
    evaluator = build_evaluator(cfg, "d2ext_test_cs_vps_val", output_folder=str(tmp_path))
    assert isinstance(evaluator, VPQEvaluator)

    with pytest.raises(FileNotFoundError, match="panoptic root"):
        register_datasets([("d2ext_test_cs_vps_x", "cityscapes_vps", gt_json, str(tmp_path))])


def _edited(gt_json, tmp_path, fn):
    with open(gt_json) as f:
        data = json.load(f)
    fn(data)
    path = str(tmp_path / "edited.json")
    with open(path, "w") as f:
        json.dump(data, f)
    return path


def _rename_image_5(d):
    d["images"][5]["id"] = d["annotations"][5]["image_id"] = "frame5"


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda d: d["annotations"].pop(3),
            r"image '0001_0004_frankfurt_000000_000294'.*no annotation",
        ),
        (
            lambda d: d["annotations"][0]["segments_info"][0].update(category_id=99),
            r"image '0001_0001_.*segment id 8405120: category_id 99 is not among",
        ),
        (
            lambda d: d["annotations"][2]["segments_info"][1].pop("area"),
            r"segments_info\[1\]: no \['area'\]",
        ),
        (_rename_image_5, r"image 'frame5' has no 'video_id'"),
        (lambda d: d["images"][0].pop("file_name"), r"images\[0\] has no \['file_name'\]"),
        (lambda d: d.pop("annotations"), "has no 'annotations' list"),
    ],
)
def test_malformed_json(layout, tmp_path, edit, message):
    gt_json, image_root, panoptic_root = layout
    path = _edited(gt_json, tmp_path, edit)
    with pytest.raises(ValueError, match=message) as e:
        load_cityscapes_vps_json(path, image_root, panoptic_root)
    assert "edited.json" in str(e.value)


def test_video_of_other_length_is_an_evaluation_error(layout, registered, tmp_path):
    """The loader takes videos of any length; VPQ (official: 6 frames per video) rejects one."""
    gt_json, image_root, panoptic_root = layout

    def drop(d):
        del d["images"][-1], d["annotations"][-1]

    path = _edited(gt_json, tmp_path, drop)
    assert [d["length"] for d in load_cityscapes_vps_json(path, image_root, panoptic_root)][-1] == 5
    registered.append("d2ext_test_cs_vps_short")
    register_datasets(
        [("d2ext_test_cs_vps_short", "cityscapes_vps", path, image_root, panoptic_root)]
    )
    with pytest.raises(ValueError, match="video '0002' has 5 annotated frames"):
        VPQEvaluator("d2ext_test_cs_vps_short")
    assert VPQEvaluator("d2ext_test_cs_vps_short", frames_per_video=None) is not None
