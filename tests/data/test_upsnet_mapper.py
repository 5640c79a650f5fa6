"""d2ext.data.mappers.UPSNetPanopticMapper: a COCO-panoptic PNG + segments_info -> UPSNet's
standard semantic labels and thing instances, through d2ext.data.PanopticLabelSpace."""

import numpy as np
import pytest
from PIL import Image

from d2ext.data import PanopticLabelSpace
from d2ext.data.mappers import UPSNetPanopticMapper


def _write_panoptic_sample(tmp_path):
    """A 16x20 image whose PNG has stuff (id 5), a thing (id 7), a crowd thing (id 9) and void."""
    ids = np.zeros((16, 20), np.int64)
    ids[:8] = 5
    ids[8:, :10] = 7
    ids[8:, 10:15] = 9
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=2).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "pan.png")
    Image.fromarray(np.zeros((16, 20, 3), np.uint8)).save(tmp_path / "img.jpg")
    segments = [
        {"id": 5, "category_id": 1, "isthing": False, "iscrowd": 0},
        {"id": 7, "category_id": 2, "isthing": True, "iscrowd": 0},
        {"id": 9, "category_id": 0, "isthing": True, "iscrowd": 1},
    ]
    return {
        "file_name": str(tmp_path / "img.jpg"),
        "pan_seg_file_name": str(tmp_path / "pan.png"),
        "height": 16,
        "width": 20,
        "image_id": 1,
        "segments_info": segments,
    }


def test_mapper_standard_labels_from_panoptic_png(tmp_path):
    # one joint id space, things and stuff interleaved: things {0, 2}, stuff {1, 3}
    space = PanopticLabelSpace(thing_ids=(0, 2), stuff_ids=(1, 3))
    mapper = UPSNetPanopticMapper(
        is_train=True, augmentations=[], image_format="BGR", label_space=space
    )
    d = _write_panoptic_sample(tmp_path)
    out = mapper(d)
    sem = out["sem_seg"]
    assert (sem[:8] == 0).all()  # stuff id 1 -> stuff 0
    assert (sem[8:, :10] == 2 + 1).all()  # thing id 2 -> thing 1 -> S + 1
    assert (sem[8:, 10:15] == 2 + 0).all()  # crowd keeps its class in the semantic labels
    assert (sem[8:, 15:] == 255).all()  # void
    inst = out["instances"]
    assert inst.gt_classes.tolist() == [1]  # crowd excluded
    assert inst.gt_boxes.tensor.tolist() == [[0.0, 8.0, 10.0, 16.0]]
    assert out["image"].shape == (3, 16, 20)

    bad = dict(d, segments_info=[{"id": 5, "category_id": 7, "isthing": False}])
    with pytest.raises(ValueError, match="img.jpg.*contiguous id 7"):
        mapper(bad)
    no_png = {k: v for k, v in d.items() if k != "pan_seg_file_name"}
    with pytest.raises(KeyError, match="img.jpg.*pan_seg_file_name"):
        mapper(no_png)
