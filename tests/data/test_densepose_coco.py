"""DensePose-COCO loading and registration (``d2ext.data.densepose_coco``): the dp_* keys kept
and checked, people without points, missing dp_masks, clear errors naming the annotation."""

import json

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from d2ext.data import DATASET_FORMATS, register_datasets
from d2ext.data.densepose_coco import (
    annotation_to_densepose_data,
    decode_dp_masks,
    load_densepose_coco_json,
    register_densepose_coco,
)
from d2ext.data.synthetic.annotations import mask_to_rle


def _masks():
    segm = np.zeros((256, 256), np.uint8)
    segm[:128] = 1  # torso
    segm[200:, :40] = 14  # head
    return [mask_to_rle(segm == c) if (segm == c).any() else [] for c in range(1, 15)], segm


def _person(ann_id, image_id, **dp):
    box = [10.0, 5.0, 40.0, 60.0]
    return {
        "id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0, "bbox": box,
        "area": 2400.0, "segmentation": [[10, 5, 50, 5, 50, 65, 10, 65]], **dp,
    }  # fmt: skip


def _points(n=3, parts=(1, 14, 24)):
    return {
        "dp_x": [0.5, 100.0, 255.5][:n], "dp_y": [3.0, 128.0, 250.0][:n], "dp_I": list(parts)[:n],
        "dp_U": [0.1, 0.5, 0.9][:n], "dp_V": [0.2, 0.6, 1.0][:n],
    }  # fmt: skip


def _write(tmp_path, annotations, name="dp.json"):
    (tmp_path / "images").mkdir(exist_ok=True)
    data = {
        "images": [{"id": 1, "file_name": "a.png", "height": 80, "width": 90}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "person", "supercategory": "person"}],
    }
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def test_load_keeps_and_checks_densepose_keys(tmp_path):
    masks, segm = _masks()
    anns = [
        _person(7, 1, **_points(), dp_masks=masks),
        _person(8, 1, dp_x=[], dp_y=[], dp_I=[], dp_U=[], dp_V=[], dp_masks=masks),  # no points
        _person(9, 1),  # no DensePose keys at all
        _person(10, 1, **_points()),  # points without dp_masks
    ]
    dicts = load_densepose_coco_json(_write(tmp_path, anns), str(tmp_path / "images"))
    a = dicts[0]["annotations"]
    assert [x["id"] for x in a] == [7, 8, 9, 10]
    assert a[0]["dp_I"] == [1, 14, 24] and len(a[0]["dp_masks"]) == 14
    assert not any(k.startswith("dp_") for k in a[1]) and not any(k.startswith("dp_") for k in a[2])
    data = annotation_to_densepose_data(a[0])
    assert data.x.tolist() == [0.5, 100.0, 255.5] and data.i.dtype.is_floating_point is False
    assert data.i.tolist() == [1, 14, 24] and data.v.tolist() == pytest.approx([0.2, 0.6, 1.0])
    assert np.array_equal(data.segm.numpy(), segm) and data.segm.dtype.itemsize == 1
    assert annotation_to_densepose_data(a[1]) is None and annotation_to_densepose_data(a[2]) is None
    assert annotation_to_densepose_data(a[3]).segm is None
    assert decode_dp_masks([[]] * 14).sum() == 0


@pytest.mark.parametrize(
    "dp, message",
    [
        (
            _points(parts=(1, 25, 3)),
            r"unknown DensePose part index 25 in dp_I \(parts are 0..24\) in ",
        ),
        (_points(parts=(1, 2.5, 3)), "unknown DensePose part index 2.5"),
        ({**_points(), "dp_masks": [[]] * 13}, "dp_masks must list 14 part RLEs, got 13 in "),
        ({**_points(), "dp_U": [0.1]}, "unequal length"),
        ({"dp_x": [1.0], "dp_y": [1.0]}, r"without \['dp_I', 'dp_U', 'dp_V'\]"),
    ],
)
def test_bad_annotations_name_the_annotation_and_file(tmp_path, dp, message):
    path = _write(tmp_path, [_person(3, 1, **_points()), _person(42, 1, **dp)], name="bad.json")
    with pytest.raises(ValueError, match=message + r".*bad\.json'?, annotation id 42 \(image 1\)"):
        load_densepose_coco_json(path, str(tmp_path / "images"))


def test_register_and_dataset_format(tmp_path, new_name):
    masks, _ = _masks()
    path = _write(tmp_path, [_person(1, 1, **_points(), dp_masks=masks)])
    images = str(tmp_path / "images")
    name = new_name("dp")
    register_densepose_coco(name, path, images)
    meta = MetadataCatalog.get(name)
    assert meta.evaluator_type == "densepose" and meta.thing_classes == ["person"]
    # no symmetry file: no table (the mapper refuses to mirror instead of guessing one)
    assert meta.densepose_transform_src is None and meta.json_file == path
    assert DatasetCatalog.get(name)[0]["annotations"][0]["dp_I"] == [1, 14, 24]

    sym = tmp_path / "UV_symmetry_transforms.mat"
    sym.write_bytes(b"")
    other = new_name("dp")
    assert "densepose_coco" in DATASET_FORMATS
    register_datasets([(other, "densepose_coco", path, images, str(sym))])
    assert MetadataCatalog.get(other).densepose_transform_src == str(sym)
    with pytest.raises(FileNotFoundError, match="UV symmetry file: file .*missing.mat"):
        register_densepose_coco(new_name("dp"), path, images, str(tmp_path / "missing.mat"))
    with pytest.raises(FileNotFoundError, match="image root: directory"):
        register_densepose_coco(new_name("dp"), path, str(tmp_path / "nowhere"))
