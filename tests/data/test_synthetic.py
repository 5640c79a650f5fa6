"""Synthetic datasets (d2ext.data.synthetic) and bad-input handling (d2ext.data.dataset_checks).

Uses tiny custom variants (6 images of 96x128) under unique names in a tmp dir; image 1 has a
crowd region, image 3 has no things (see ``SyntheticSpec``)."""

import filecmp
import json
import logging
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import uuid

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data import (
    DatasetCatalog,
    DatasetMapper,
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
)
from detectron2.data.build import get_detection_dataset_dicts
from detectron2.data.datasets import register_coco_instances
from detectron2.evaluation import COCOEvaluator, COCOPanopticEvaluator, SemSegEvaluator
from detectron2.structures import BitMasks, Boxes, BoxMode, Instances
from detectron2.utils.visualizer import Visualizer
from panopticapi.utils import rgb2id
from PIL import Image
from pycocotools.coco import COCO

import d2ext  # noqa: F401  (registration)
from d2ext.data import SafeMapper, add_dataset_checks, validate_dataset_dicts
from d2ext.data.synthetic import (
    BUILTIN_DATASETS,
    SyntheticSpec,
    builtin_spec,
    ensure_synthetic_generated,
    generate,
    register_synthetic_panoptic,
    register_synthetic_shapes,
    render_image,
    synthetic_dataset_dir,
)
from d2ext.data.synthetic.categories import instances_metadata

SIZE = (96, 128)
N = 6


def _unique(prefix):
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("synth"))


@pytest.fixture(scope="module")
def shapes(root):
    name = _unique("_test_shapes")
    register_synthetic_shapes(name, root, num_images=N, image_size=SIZE, seed=5)
    assert ensure_synthetic_generated([name, "coco_2017_train"]) == [name]
    return name


@pytest.fixture(scope="module")
def panoptic(root):
    name = _unique("_test_panoptic")
    register_synthetic_panoptic(name, root, num_images=N, image_size=SIZE, seed=6)
    ensure_synthetic_generated(name)
    return name


def _all_files(d):
    return sorted(os.path.relpath(os.path.join(r, f), d) for r, _, fs in os.walk(d) for f in fs)


@pytest.mark.parametrize("kind", ["shapes", "panoptic"])
def test_same_seed_same_bytes(tmp_path, kind):
    spec = SyntheticSpec(kind, 3, SIZE, seed=11)
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert generate(spec, a) and generate(spec, b)
    files = _all_files(a)
    assert files == _all_files(b) and "instances.json" in files
    _, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
    assert mismatch == [] and errors == []
    other = str(tmp_path / "c")
    generate(SyntheticSpec(kind, 3, SIZE, seed=12), other)
    assert not filecmp.cmp(
        os.path.join(a, "images/000000.jpg"),
        os.path.join(other, "images/000000.jpg"),
        shallow=False,
    )


def test_builtin_specs_deterministic():
    # the landmark kinds (synth_faces_*, synth_bodies_*) are tested in test_synthetic_landmarks
    scenes = [n for n, (kind, _, _) in BUILTIN_DATASETS.items() if kind in ("shapes", "panoptic")]
    assert set(scenes) == {
        "synth_shapes_train",
        "synth_shapes_val",
        "synth_shapes_tune",
        "synth_panoptic_train",
        "synth_panoptic_val",
        "synth_panoptic_test",
        "synth_shapes_mini_train",
        "synth_shapes_mini_val",
        "synth_panoptic_mini_train",
        "synth_panoptic_mini_val",
    }
    for name in scenes:
        spec = builtin_spec(name)
        assert spec.image_size == (256, 256) and spec.num_images >= (8 if "mini" in name else 40)
        s1, s2 = render_image(spec, 2), render_image(spec, 2)
        assert np.array_equal(s1.image, s2.image) and np.array_equal(
            s1.instance_map, s2.instance_map
        )
        assert [o.category_id for o in s1.objects] == [o.category_id for o in s2.objects]
    train, val = (
        render_image(builtin_spec("synth_shapes_train"), 0),
        render_image(builtin_spec("synth_shapes_val"), 0),
    )
    assert not np.array_equal(train.image, val.image)
    assert not np.array_equal(render_image(builtin_spec("synth_shapes_tune"), 0).image, val.image)


def test_spec_rejects_bad_values():
    with pytest.raises(ValueError, match="kind"):
        SyntheticSpec("video", 2, SIZE, 0)
    with pytest.raises(ValueError, match="num_images"):
        SyntheticSpec("shapes", 0, SIZE, 0)
    with pytest.raises(ValueError, match="image_size"):
        SyntheticSpec("shapes", 2, (16, 16), 0)


def test_coco_json_masks_bboxes_areas(shapes):
    meta = MetadataCatalog.get(shapes)
    coco = COCO(meta.json_file)
    assert sorted(coco.getCatIds()) == sorted(meta.thing_dataset_id_to_contiguous_id)
    assert sorted(coco.getCatIds()) != list(range(1, len(coco.getCatIds()) + 1))  # has gaps
    for ann in coco.loadAnns(coco.getAnnIds()):
        mask = coco.annToMask(ann).astype(bool)
        assert mask.sum() == ann["area"] > 0
        rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
        assert np.allclose(mask_util.toBbox(rle), ann["bbox"])
        assert isinstance(ann["segmentation"], dict if ann["iscrowd"] else list)


def test_catalog_instance_counts_crowd_and_empty(shapes):
    coco = json.load(open(MetadataCatalog.get(shapes).json_file))
    per_image = {im["id"]: 0 for im in coco["images"]}
    for a in coco["annotations"]:
        per_image[a["image_id"]] += 1
    dicts = DatasetCatalog.get(shapes)
    assert len(dicts) == N
    for d in dicts:
        assert len(d["annotations"]) == per_image[d["image_id"]]
        assert all(
            0 <= a["category_id"] < 6 and a["bbox_mode"] == BoxMode.XYWH_ABS
            for a in d["annotations"]
        )
        assert (d["height"], d["width"]) == SIZE == Image.open(d["file_name"]).size[::-1]
    assert len(dicts[3]["annotations"]) == 0  # an image without things
    assert any(a["iscrowd"] == 1 for a in dicts[1]["annotations"])  # a crowd region
    assert sum(len(d["annotations"]) for d in dicts) >= N
    # D2 drops images without (non-crowd) instances at train time, keeps them otherwise
    kept = get_detection_dataset_dicts([shapes], filter_empty=True)
    assert dicts[3]["image_id"] not in {d["image_id"] for d in kept} and len(kept) < N
    assert len(get_detection_dataset_dicts([shapes], filter_empty=False)) == N


def test_names_and_metadata(shapes, panoptic):
    assert MetadataCatalog.get(shapes).evaluator_type == "coco"
    for suffix, etype in [
        ("", "coco_panoptic_seg"),
        ("_separated", "coco_panoptic_seg"),
        ("_stuffonly", "sem_seg"),
    ]:
        meta = MetadataCatalog.get(panoptic + suffix)
        assert meta.evaluator_type == etype and meta.stuff_classes and meta.thing_classes
        assert synthetic_dataset_dir(panoptic + suffix) == synthetic_dataset_dir(panoptic)
    sep = MetadataCatalog.get(panoptic + "_separated")
    assert sep.stuff_classes[0] == "things" and sep.stuff_dataset_id_to_contiguous_id[0] == 0
    assert min(k for k in sep.stuff_dataset_id_to_contiguous_id if k) >= 100
    std = MetadataCatalog.get(panoptic)
    assert len(std.thing_classes) == len(std.thing_dataset_id_to_contiguous_id) + len(
        std.stuff_dataset_id_to_contiguous_id
    )


def test_panoptic_pngs_match_instances_and_semantic(panoptic):
    meta = MetadataCatalog.get(panoptic + "_separated")
    coco = COCO(meta.json_file)
    pan = {a["image_id"]: a for a in json.load(open(meta.panoptic_json))["annotations"]}
    stuff_map = meta.stuff_dataset_id_to_contiguous_id
    stuff_seen = set()
    for d in DatasetCatalog.get(panoptic + "_separated"):
        ann = pan[d["image_id"]]
        ids = rgb2id(np.asarray(Image.open(os.path.join(meta.panoptic_root, ann["file_name"]))))
        segs = ann["segments_info"]
        assert sorted(np.unique(ids).tolist()) == sorted(s["id"] for s in segs)  # no void
        things = [s for s in segs if s["category_id"] in meta.thing_dataset_id_to_contiguous_id]
        instances = coco.loadAnns(coco.getAnnIds(imgIds=d["image_id"]))
        assert len(things) == len(instances) == len(d["annotations"])
        for s, inst in zip(things, instances):
            assert np.array_equal(coco.annToMask(inst).astype(bool), ids == s["id"])
            assert s["area"] == inst["area"] and s["iscrowd"] == inst["iscrowd"]
        expected = np.full(ids.shape, 255, np.uint8)
        for s in segs:
            expected[ids == s["id"]] = stuff_map.get(s["category_id"], 0)
            stuff_seen.add(s["category_id"]) if s["category_id"] in stuff_map else None
        assert np.array_equal(np.asarray(Image.open(d["sem_seg_file_name"])), expected)
    assert len(stuff_seen) >= 2


def test_coco_evaluator_gt_is_perfect(shapes):
    evaluator = COCOEvaluator(shapes, tasks=("bbox", "segm"), distributed=False)
    evaluator.reset()
    for d in DatasetCatalog.get(shapes):
        anns = [a for a in d["annotations"] if not a["iscrowd"]]
        inst = Instances(SIZE)
        boxes = [BoxMode.convert(a["bbox"], BoxMode.XYWH_ABS, BoxMode.XYXY_ABS) for a in anns]
        inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        inst.scores = torch.ones(len(anns))
        inst.pred_classes = torch.tensor([a["category_id"] for a in anns], dtype=torch.int64)
        inst.pred_masks = BitMasks.from_polygon_masks(
            [a["segmentation"] for a in anns], *SIZE
        ).tensor
        evaluator.process([d], [{"instances": inst}])
    res = evaluator.evaluate()
    assert res["segm"]["AP"] == pytest.approx(100.0) and res["bbox"]["AP"] == pytest.approx(100.0)


def test_panoptic_and_semseg_evaluators_gt_is_perfect(panoptic):
    evaluator = COCOPanopticEvaluator(panoptic)
    evaluator.reset()
    for d in DatasetCatalog.get(panoptic):
        ids = rgb2id(np.asarray(Image.open(d["pan_seg_file_name"])))
        evaluator.process([d], [{"panoptic_seg": (torch.from_numpy(ids), d["segments_info"])}])
    pq = evaluator.evaluate()["panoptic_seg"]
    assert pq["PQ"] == pytest.approx(100.0) and pq["PQ_th"] == pytest.approx(100.0)
    assert pq["PQ_st"] == pytest.approx(100.0)

    name = panoptic + "_stuffonly"
    num_classes = len(MetadataCatalog.get(name).stuff_classes)
    sem = SemSegEvaluator(name, distributed=False)
    sem.reset()
    for d in DatasetCatalog.get(name):
        gt = torch.from_numpy(np.asarray(Image.open(d["sem_seg_file_name"])).astype(np.int64))
        logits = torch.nn.functional.one_hot(gt.clamp(max=num_classes - 1), num_classes).permute(
            2, 0, 1
        )
        sem.process([d], [{"sem_seg": logits.float()}])
    assert sem.evaluate()["sem_seg"]["mIoU"] == pytest.approx(100.0)


def test_visualizer_draws(shapes, panoptic):
    for name in (shapes, panoptic, panoptic + "_separated"):
        d = DatasetCatalog.get(name)[1]
        img = np.asarray(Image.open(d["file_name"]))
        out = Visualizer(img, MetadataCatalog.get(name)).draw_dataset_dict(d).get_image()
        assert out.shape == img.shape and not np.array_equal(out, img)


def _generate_in_child(spec, out_dir, queue):
    queue.put(generate(spec, out_dir))


def test_concurrent_generation_and_spec_change(tmp_path):
    spec, out_dir = SyntheticSpec("shapes", 4, SIZE, seed=3), str(tmp_path / "ds")
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_generate_in_child, args=(spec, out_dir, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert sorted([queue.get(), queue.get()]) == [False, True]  # one generated, one reused
    assert sorted(os.listdir(tmp_path)) == [".ds.lock", "ds"]  # temp dirs cleaned up
    assert generate(spec, out_dir) is False
    changed = SyntheticSpec("shapes", 2, SIZE, seed=3)
    assert generate(changed, out_dir) is True
    assert len(json.load(open(os.path.join(out_dir, "instances.json")))["images"]) == 2


def test_make_synthetic_cli(tmp_path, repo_root):
    cmd = [
        sys.executable,
        "tools/make_synthetic.py",
        "synth_shapes_val",
        "--root",
        str(tmp_path),
        "--num-images",
        "2",
        "--size",
        "64",
        "80",
        "--seed",
        "9",
    ]
    out = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (
        "synth_shapes_val: shapes, 2 images of 64x80" in out.stdout and str(tmp_path) in out.stdout
    )
    assert len(os.listdir(tmp_path / "synth_shapes" / "synth_shapes_val" / "images")) == 2
    cmd[2] = "synth_faces_val"
    out = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "synth_faces_val: faces, 2 images of 64x80, 2 faces, 68 landmarks each" in out.stdout
    images = tmp_path / "synth_faces" / "synth_faces_val" / "images"
    assert sorted(os.listdir(images)) == ["000000.png", "000000.pts", "000001.png", "000001.pts"]
    cmd[2] = "synth_face_scenes_val"
    out = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    root = tmp_path / "synth_face_scenes" / "synth_face_scenes_val"
    with open(root / "label.txt") as f:
        faces = [line for line in f if line.strip() and not line.startswith("#")]
    assert (
        f"synth_face_scenes_val: face_scenes, 2 images of 64x80, {len(faces)} faces (" in out.stdout
    )
    assert sorted(os.listdir(root / "gt")) == [
        "wider_easy_val.mat", "wider_face_val.mat", "wider_hard_val.mat", "wider_medium_val.mat"
    ]  # fmt: skip


def test_make_synthetic_cli_rejects_unknown_names(repo_root, capsys):
    sys.path.insert(0, os.path.join(repo_root, "tools"))
    try:
        import make_synthetic
    finally:
        sys.path.pop(0)
    assert make_synthetic.main(["nope"]) == 2
    assert "unknown synthetic dataset" in capsys.readouterr().err
    assert make_synthetic.main(["synth_shapes_val", "--size", "1", "2", "3"]) == 2


# ---------------------------------------------------------------- bad inputs
def _copy_with_json_edit(shapes, tmp_path, edit):
    meta = MetadataCatalog.get(shapes)
    data = json.load(open(meta.json_file))
    edit(data)
    json_file = str(tmp_path / "instances.json")
    json.dump(data, open(json_file, "w"))
    name = _unique("_test_bad")
    register_coco_instances(name, instances_metadata(), json_file, meta.image_root)
    add_dataset_checks([name])
    return name, data


def test_unknown_category_id_in_json_is_a_clear_error(shapes, tmp_path):
    def edit(data):
        data["annotations"][0]["category_id"] = 77

    name, data = _copy_with_json_edit(shapes, tmp_path, edit)
    image = {im["id"]: im["file_name"] for im in data["images"]}[data["annotations"][0]["image_id"]]
    with pytest.raises(ValueError, match=f"{name}: image {image} .*category_id=77"):
        DatasetCatalog.get(name)


def test_category_in_json_but_not_in_metadata_is_a_clear_error(shapes, tmp_path):
    def edit(data):
        data["categories"].append({"id": 77, "name": "blob", "isthing": 1})
        data["annotations"][-1]["category_id"] = 77

    name, _ = _copy_with_json_edit(shapes, tmp_path, edit)
    with pytest.raises(ValueError, match="category_id=77 is not among the known category ids"):
        DatasetCatalog.get(name)


def test_validate_dataset_dicts_names_image_and_field(shapes):
    dicts = [
        dict(d, annotations=[dict(a) for a in d["annotations"]]) for d in DatasetCatalog.get(shapes)
    ]
    assert validate_dataset_dicts(dicts, shapes) is dicts
    d = next(d for d in dicts if d["annotations"])
    d["annotations"][0]["category_id"] = 6
    with pytest.raises(ValueError, match=f"image {d['file_name']}: annotation 0 has category_id=6"):
        validate_dataset_dicts(dicts, shapes)
    d["annotations"][0]["category_id"] = 0
    d["annotations"][0]["bbox"] = [0, 0, -3, 4]
    with pytest.raises(ValueError, match="malformed bbox"):
        validate_dataset_dicts(dicts, shapes)
    with pytest.raises(ValueError, match="no 'file_name'"):
        validate_dataset_dicts([{"image_id": 1}], shapes)


def test_corrupt_image_skipped_in_training_error_in_test(shapes, tmp_path, caplog):
    dicts = [dict(d) for d in DatasetCatalog.get(shapes)]
    bad = str(tmp_path / "corrupt.jpg")
    shutil.copy(dicts[0]["file_name"], bad)
    with open(bad, "r+b") as f:
        f.truncate(200)
    dicts[0]["file_name"] = bad
    dicts[2]["file_name"] = str(tmp_path / "missing.jpg")
    mapper = DatasetMapper(
        is_train=True, augmentations=[], image_format="BGR", use_instance_mask=True
    )
    safe = SafeMapper(mapper=mapper, is_train=True)
    with caplog.at_level(logging.WARNING):
        assert safe(dict(dicts[0])) is None
    assert "corrupt.jpg" in caplog.text
    train = [d for d in dicts if d["annotations"]]
    loader = build_detection_train_loader(train, mapper=safe, total_batch_size=2, num_workers=0)
    it = iter(loader)
    for _ in range(4):
        batch = next(it)
        assert all(
            "corrupt" not in x["file_name"] and "missing" not in x["file_name"] for x in batch
        )
    test_mapper = SafeMapper(
        mapper=DatasetMapper(is_train=False, augmentations=[], image_format="BGR"), is_train=False
    )
    loader = build_detection_test_loader(dicts[:1], mapper=test_mapper, num_workers=0)
    with pytest.raises(OSError, match="corrupt.jpg"):
        next(iter(loader))


def test_safe_mapper_from_config():
    from detectron2.config import get_cfg

    cfg = get_cfg()
    assert SafeMapper(cfg, is_train=False).is_train is False
    train = SafeMapper(cfg, is_train=True)
    assert train.is_train and isinstance(train.mapper, DatasetMapper)
