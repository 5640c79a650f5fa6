"""DATASETS.REGISTER (d2ext.data.datasets): datasets registered from the config or the command
line, their metadata (D2's own, read from the json), the errors, and end-to-end trainings."""

import inspect
import json
import os
import sys

import cv2
import numpy as np
import pytest
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from tool_runs import TWO_ITERATIONS, run_in_repo

from d2ext import add_d2ext_config
from d2ext.data import DATASET_FORMATS, register_datasets
from d2ext.engine import register_cfg_datasets

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


@pytest.fixture
def coco_dir(tmp_path):
    """A two-image COCO instances dataset; category ids unsorted and not 1..C."""
    images = tmp_path / "images"
    images.mkdir()
    records, anns = [], []
    for i in range(2):
        cv2.imwrite(str(images / f"im{i}.jpg"), np.full((32, 48, 3), 40 * (i + 1), np.uint8))
        records.append({"id": i + 1, "file_name": f"im{i}.jpg", "height": 32, "width": 48})
        anns.append(
            {
                "id": i + 1,
                "image_id": i + 1,
                "category_id": (7, 3)[i],
                "bbox": [4, 4, 10, 8],
                "area": 80,
                "iscrowd": 0,
                "segmentation": [[4, 4, 14, 4, 14, 12, 4, 12]],
            }
        )
    cats = [
        {"id": 7, "name": "kite", "color": [1, 2, 3]},
        {"id": 3, "name": "car", "color": [4, 5, 6]},
    ]
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": records, "annotations": anns, "categories": cats}))
    return tmp_path


def test_coco_entry_registers_with_d2s_loader_and_metadata(coco_dir, new_name):
    name, ref = new_name(), new_name()
    assert register_datasets(
        [(name, "coco", str(coco_dir / "ann.json"), str(coco_dir / "images"))]
    ) == [name]
    meta = MetadataCatalog.get(name)
    assert meta.evaluator_type == "coco"
    assert meta.json_file == str(coco_dir / "ann.json") and meta.image_root == str(
        coco_dir / "images"
    )
    assert meta.thing_colors == [[4, 5, 6], [1, 2, 3]]
    # the metadata D2's own loader sets on first load, from an empty registration
    register_coco_instances(ref, {}, str(coco_dir / "ann.json"), str(coco_dir / "images"))
    ref_dicts = DatasetCatalog.get(ref)
    ref_meta = MetadataCatalog.get(ref)
    assert meta.thing_classes == ref_meta.thing_classes == ["car", "kite"]
    assert (
        meta.thing_dataset_id_to_contiguous_id
        == ref_meta.thing_dataset_id_to_contiguous_id
        == {3: 0, 7: 1}
    )
    # loading through D2's loader sets the same values again (Metadata would assert otherwise)
    dicts = DatasetCatalog.get(name)
    assert [[a["category_id"] for a in d["annotations"]] for d in dicts] == [[1], [0]]
    assert [d["file_name"] for d in dicts] == [d["file_name"] for d in ref_dicts]


def test_register_is_idempotent_and_paths_are_resolved(coco_dir, new_name, monkeypatch):
    name = new_name()
    monkeypatch.chdir(coco_dir)
    entry = (name, "coco", "ann.json", "images/")
    register_datasets([entry])
    loader = DatasetCatalog[name]
    register_datasets([entry, [name, "coco", str(coco_dir / "ann.json"), str(coco_dir / "images")]])
    assert DatasetCatalog[name] is loader  # same entry (relative or absolute): left as it was
    assert MetadataCatalog.get(name).json_file == str(coco_dir / "ann.json")
    monkeypatch.chdir(REPO)
    assert len(DatasetCatalog.get(name)) == 2  # absolute paths: the working dir may change


def test_another_entry_under_a_registered_name_is_an_error(coco_dir, new_name):
    name = new_name()
    register_datasets([(name, "coco", str(coco_dir / "ann.json"), str(coco_dir / "images"))])
    other = coco_dir / "other.json"
    other.write_text((coco_dir / "ann.json").read_text())
    with pytest.raises(ValueError, match=f"{name}.*already registered.*other.json"):
        register_datasets([(name, "coco", str(other), str(coco_dir / "images"))])
    # names registered elsewhere (D2 builtins, d2ext's synthetic datasets, user code) too
    for taken in ("coco_2017_val", "synth_shapes_train"):
        with pytest.raises(ValueError, match=f"{taken}.*already registered"):
            register_datasets(
                [(taken, "coco", str(coco_dir / "ann.json"), str(coco_dir / "images"))]
            )


@pytest.mark.parametrize(
    "entry,missing",
    [
        (("coco", "nope.json", "images"), "annotation json: file .*nope.json"),
        (("coco", "ann.json", "no_images"), "image root: directory .*no_images"),
        (("coco_panoptic", "ann.json", "images", "no_png"), "panoptic root: directory .*no_png"),
        (
            ("coco_panoptic", "ann.json", "images", "images", "no_inst.json"),
            "instances json: file .*no_inst",
        ),
    ],
    ids=["json", "image_root", "panoptic_root", "instances_json"],
)
def test_missing_file_is_named_and_nothing_is_registered(coco_dir, new_name, entry, missing):
    name = new_name()
    fmt, *paths = entry
    with pytest.raises(FileNotFoundError, match=f"{name}.*{missing}"):
        register_datasets([(name, fmt, *[str(coco_dir / p) for p in paths])])
    assert name not in DatasetCatalog.list()


def test_unknown_format_lists_the_known_ones(new_name):
    with pytest.raises(
        ValueError,
        match="unknown format 'voc'; known formats: cityscapes_vps, coco, coco_panoptic, "
        "densepose_coco, ibug_pts, wider_bbx, widerface, youtube_vis, youtube_vis_clips$",
    ):
        register_datasets([(new_name(), "voc", "a.json", "images")])


def test_malformed_entries_are_clear_errors(coco_dir, new_name):
    ann, images = str(coco_dir / "ann.json"), str(coco_dir / "images")
    with pytest.raises(
        ValueError, match=r"format 'coco' takes \(name, 'coco', instances_json, image_root\)"
    ):
        register_datasets([(new_name(), "coco", ann)])
    with pytest.raises(ValueError, match=r"panoptic_root, \[instances_json\]"):
        register_datasets([(new_name(), "coco_panoptic", ann, images)])
    with pytest.raises(ValueError, match="looks like a single entry"):
        register_datasets((new_name(), "coco", ann, images))
    with pytest.raises(ValueError, match="expected strings"):
        register_datasets([(new_name(), "coco", ann, 3)])


def test_bad_json_is_named_and_nothing_is_registered(coco_dir, new_name):
    images = str(coco_dir / "images")
    (coco_dir / "nocats.json").write_text(json.dumps({"images": [], "annotations": []}))
    (coco_dir / "pan.json").write_text(json.dumps({"categories": [{"id": 1, "name": "a"}]}))
    (coco_dir / "broken.json").write_text("{")
    (coco_dir / "list.json").write_text("[]")
    cases = [
        ("coco", "nocats.json", "has no 'categories'"),
        ("coco", "broken.json", "not valid json"),
        ("coco", "list.json", "list.json' holds a list, not a COCO json object"),
        ("coco_panoptic", "pan.json", r"pan.json.*without 'isthing': \['a'\]"),
    ]
    for fmt, json_name, msg in cases:
        name = new_name()
        extra = [images] if fmt == "coco_panoptic" else []
        with pytest.raises(ValueError, match=msg):
            register_datasets([(name, fmt, str(coco_dir / json_name), images, *extra)])
        assert name not in DatasetCatalog.list()


def test_failed_registration_keeps_metadata_set_up_beforehand(coco_dir, new_name):
    name = new_name()
    # D2's register_coco_instances registers the loader, then sets evaluator_type="coco" on the
    # metadata, which conflicts with the user's value: the failure comes after registration
    MetadataCatalog.get(name).set(evaluator_type="sem_seg", note="mine")
    with pytest.raises(AssertionError, match="evaluator_type"):
        register_datasets([(name, "coco", str(coco_dir / "ann.json"), str(coco_dir / "images"))])
    assert name not in DatasetCatalog.list()
    assert MetadataCatalog.get(name).note == "mine"


def test_every_format_takes_name_annotation_and_image_root_first():
    """The contract of DATASET_FORMATS that later formats (wider_face, youtube_vis...) follow:
    name, then the annotation file (or folder, as ibug_pts' .pts folder), then the image root."""
    assert {"coco", "coco_panoptic", "ibug_pts"} <= set(DATASET_FORMATS)
    for fmt, register in DATASET_FORMATS.items():
        params = list(inspect.signature(register).parameters)
        annotations = "json" in params[1] or params[1].endswith(("_dir", "_txt"))
        assert params[0] == "name" and annotations and params[2] == "image_root", (
            fmt,
            params,
        )


def test_config_key_from_the_command_line(coco_dir, new_name):
    name = new_name()
    cfg = get_cfg()
    add_d2ext_config(cfg)
    assert cfg.DATASETS.REGISTER == []
    cfg.merge_from_list(
        [
            "DATASETS.REGISTER",
            f"[('{name}', 'coco', '{coco_dir / 'ann.json'}', '{coco_dir / 'images'}')]",
            "DATASETS.TRAIN",
            f"('{name}',)",
        ]
    )
    assert register_cfg_datasets(cfg) == [name]
    assert len(DatasetCatalog.get(cfg.DATASETS.TRAIN[0])) == 2
    cfg.dump()  # the entries survive D2's config.yaml dump (default_setup writes it)


def _panoptic_entry(name, root):
    return (
        name,
        "coco_panoptic",
        os.path.join(root, "panoptic_examples.json"),
        os.path.join(root, "input_images"),
        os.path.join(root, "panoptic_examples"),
    )


def test_coco_panoptic_entry_has_d2s_coco_metadata(require_shared, new_name):
    """Metadata read from the real COCO panoptic json equals D2's builtin COCO panoptic
    ("standard") metadata, which D2 writes from its own category table."""
    from detectron2.data.datasets.builtin_meta import _get_builtin_metadata

    root = require_shared("real_samples", "coco_panoptic")
    name = new_name()
    register_datasets([_panoptic_entry(name, root)])
    meta, ref = MetadataCatalog.get(name), _get_builtin_metadata("coco_panoptic_standard")
    for key in (
        "thing_classes",
        "stuff_classes",
        "thing_colors",
        "stuff_colors",
        "thing_dataset_id_to_contiguous_id",
        "stuff_dataset_id_to_contiguous_id",
    ):
        assert getattr(meta, key) == ref[key], key
    assert meta.evaluator_type == "coco_panoptic_seg" and meta.json_file is None
    dicts = DatasetCatalog.get(name)
    assert len(dicts) == 2 and all(os.path.isfile(d["pan_seg_file_name"]) for d in dicts)
    assert {s["category_id"] for d in dicts for s in d["segments_info"]} <= set(range(133))


@pytest.mark.slow
def test_train_net_on_coco_panoptic_registered_from_the_command_line(require_shared, tmp_path):
    """Two real COCO images with panoptic ground truth: registered by DATASETS.REGISTER on the
    command line, UPSNet trained 2 iterations, PQ evaluated, the predictions drawn."""
    root = require_shared("real_samples", "coco_panoptic")
    out = tmp_path / "out"
    entry = _panoptic_entry("real_coco_pan", root)
    log = run_in_repo(
        [
            sys.executable,
            "tools/train_net.py",
            "--config-file",
            "configs/UPSNet/upsnet_R_18_synth.yaml",
            "DATASETS.REGISTER",
            repr([entry]),
            "DATASETS.TRAIN",
            "('real_coco_pan',)",
            "DATASETS.TEST",
            "('real_coco_pan',)",
            "MODEL.ROI_HEADS.NUM_CLASSES",
            "80",
            "MODEL.UPSNET.NUM_STUFF_CLASSES",
            "53",
            *TWO_ITERATIONS,
            "D2EXT.VIS_PERIOD_IMAGES",
            "1",
            "OUTPUT_DIR",
            str(out),
        ],
        tmp_path,
    )
    assert "Registered dataset 'real_coco_pan' (coco_panoptic)" in log
    assert (out / "model_final.pth").is_file()
    assert "copypaste: Task: panoptic_seg" in log, log[-3000:]
    assert "Panoptic Evaluation Results" in log
    assert sorted(os.listdir(out / "vis" / "real_coco_pan")) == ["000000142238.png"]


@pytest.mark.slow
def test_train_net_on_coco_registered_from_the_command_line(tmp_path):
    """The README's command: a COCO-format dataset (the synthetic mini split's files) under
    new names, Mask R-CNN trained 2 iterations and evaluated with COCO AP."""
    from d2ext.data.synthetic import ensure_synthetic_generated, synthetic_dataset_dir

    ensure_synthetic_generated(["synth_shapes_mini_train", "synth_shapes_mini_val"])
    entries = [
        (
            new,
            "coco",
            os.path.join(synthetic_dataset_dir(src), "instances.json"),
            os.path.join(synthetic_dataset_dir(src), "images"),
        )
        for new, src in (
            ("my_train", "synth_shapes_mini_train"),
            ("my_val", "synth_shapes_mini_val"),
        )
    ]
    out = tmp_path / "out"
    log = run_in_repo(
        [
            sys.executable,
            "tools/train_net.py",
            "--config-file",
            "configs/Base/mask_rcnn_R_18_FPN_synth.yaml",
            "DATASETS.REGISTER",
            repr(entries),
            "DATASETS.TRAIN",
            "('my_train',)",
            "DATASETS.TEST",
            "('my_val',)",
            *TWO_ITERATIONS,
            "OUTPUT_DIR",
            str(out),
        ],
        tmp_path,
    )
    assert (out / "model_final.pth").is_file()
    assert "Evaluation results for segm" in log, log[-3000:]
    assert "Evaluation results for my_val in csv format" in log
