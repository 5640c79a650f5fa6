"""Synthetic face scenes (``d2ext.data.synthetic.face_scenes``): determinism, the label.txt /
.mat files agreeing with each other, keep-list rules, landmarks, and the builtin mini splits
loading through the WIDER FACE loader."""

import filecmp
import os

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

import d2ext  # noqa: F401  (registration)
from d2ext.data.synthetic import BUILTIN_DATASETS, SyntheticSpec, generate
from d2ext.data.synthetic.face_scenes import (
    EVENTS,
    SceneFace,
    five_landmarks,
    render_face_scene,
    subset_keep,
)
from d2ext.data.synthetic.faces import FaceShape, canonical_landmarks
from d2ext.data.wider_face import load_wider_face_label
from d2ext.data.wider_face_mat import read_wider_gt_mats

SPEC = SyntheticSpec("face_scenes", 12, (160, 160), seed=7, max_objects=10)


@pytest.fixture(scope="module")
def scenes_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("face_scenes") / "a")
    assert generate(SPEC, out)
    return out


def test_render_deterministic_and_varied():
    a, b = render_face_scene(3, 5, 96, 128), render_face_scene(3, 5, 96, 128)
    assert a.image.shape == (96, 128, 3) and a.image.dtype == np.uint8
    np.testing.assert_array_equal(a.image, b.image)
    assert [f.box for f in a.faces] == [f.box for f in b.faces]
    assert not np.array_equal(a.image, render_face_scene(3, 6, 96, 128).image)


def test_generation_deterministic(scenes_dir, tmp_path):
    other = str(tmp_path / "b")
    assert generate(SPEC, other)
    assert not generate(SPEC, other)  # already there
    files = []
    for dirpath, _, names in os.walk(scenes_dir):
        files += [os.path.relpath(os.path.join(dirpath, n), scenes_dir) for n in names]
    # the .mat files carry a creation time in their header: compared by content below
    same = [f for f in files if not f.endswith(".mat")]
    match, mismatch, errors = filecmp.cmpfiles(scenes_dir, other, same, shallow=False)
    assert not mismatch and not errors and len(match) == len(same) > SPEC.num_images
    a, b = (read_wider_gt_mats(os.path.join(d, "gt")) for d in (scenes_dir, other))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["boxes"], y["boxes"])


def test_label_and_mats_agree(scenes_dir):
    dicts = load_wider_face_label(
        os.path.join(scenes_dir, "label.txt"), os.path.join(scenes_dir, "images")
    )
    assert len(dicts) == SPEC.num_images
    gt = {(g["event"], g["file"]): g for g in read_wider_gt_mats(os.path.join(scenes_dir, "gt"))}
    assert len(gt) == SPEC.num_images
    for d in dicts:
        event, file = d["image_id"].split("/")
        assert event in EVENTS and (d["height"], d["width"]) == SPEC.image_size
        g = gt[(event, file)]
        boxes = np.array([a["bbox"] for a in d["annotations"]]).reshape(-1, 4)
        np.testing.assert_array_equal(boxes, g["boxes"])
        assert (boxes[:, 2:] > 0).all() and (boxes[:, :2] >= 0).all()
        assert (boxes[:, :2] + boxes[:, 2:] <= 160).all()
        easy, medium, hard = (set(g["keep"][s].tolist()) for s in ("easy", "medium", "hard"))
        assert easy <= medium <= hard <= set(range(len(boxes)))  # nested as the official
        np.testing.assert_array_equal(g["blur"], [a["blur"] for a in d["annotations"]])


def test_scene_content_over_the_split(scenes_dir):
    """Faces from ~8 px to most of the image, some without landmarks, blurred, occluded; an
    image without faces; labelled visible landmarks lie in their face's box."""
    scenes = [render_face_scene(SPEC.seed, i, *SPEC.image_size, 10) for i in range(40)]
    faces = [f for s in scenes for f in s.faces]
    heights = [f.box[3] for f in faces]
    assert min(heights) <= 10 and max(heights) >= 100
    assert any(not s.faces for s in scenes) and {s.event for s in scenes} == set(EVENTS)
    assert {f.blur for f in faces} == {0, 1, 2} and {f.occlusion for f in faces} == {0, 1, 2}
    with_lm = [f for f in faces if f.landmarks is not None]
    assert 0 < len(with_lm) < len(faces)
    assert all(f.box[3] >= 12 for f in with_lm)
    for f in with_lm:
        x, y, w, h = f.box
        pts = f.landmarks[f.flags == 0]
        assert ((pts >= [x, y]) & (pts <= [x + w, y + h])).all()
        # image-left eye left of the image-right eye, mouth corners likewise
        assert f.landmarks[0, 0] < f.landmarks[1, 0] and f.landmarks[3, 0] < f.landmarks[4, 0]
        assert ((f.landmarks - 0.5) * 16 % 1 == 0).all()  # on the 1/16-pixel grid


def test_five_landmarks_from_the_68():
    shape = FaceShape()
    c = canonical_landmarks(shape)
    five = five_landmarks(shape)
    np.testing.assert_array_equal(five[0], c[36:42].mean(0))
    np.testing.assert_array_equal(five[1], c[42:48].mean(0))
    np.testing.assert_array_equal(five[2:], c[[30, 48, 54]])
    np.testing.assert_allclose(five[0, :2], [-shape.eye_x, five[0, 1]])  # eye centre x
    assert five[0, 0] < 0 < five[1, 0]  # image left, image right of a frontal face


def test_subset_keep_rules():
    def face(side, blur=0, occlusion=0):
        return SceneFace((0, 0, side, side), None, np.zeros(5), blur, occlusion)

    faces = [face(7), face(8), face(16), face(40), face(40, blur=1), face(60, 2, 1), face(22, 1)]
    keep = subset_keep(faces)
    assert keep["hard"].tolist() == [1, 2, 3, 4, 5, 6]
    assert keep["medium"].tolist() == [2, 3, 4, 5, 6]  # 22 * 0.75 >= 16
    assert keep["easy"].tolist() == [3]  # 40 * 0.75 < 40, 60 * 0.5 * 0.75 < 40
    assert all(v.dtype == np.int64 for v in keep.values())


def test_builtin_mini_splits_load_through_the_wider_loader():
    for split, n in (("mini_train", 16), ("mini_val", 8)):
        name = f"synth_face_scenes_{split}"
        assert BUILTIN_DATASETS[name][:2] == ("face_scenes", n)
        dicts = DatasetCatalog.get(name)
        meta = MetadataCatalog.get(name)
        assert len(dicts) == n and meta.evaluator_type == "widerface"
        assert meta.thing_classes == ["face"] and len(meta.keypoint_names) == 5
        assert sorted(os.listdir(meta.wider_gt_dir)) == [
            "wider_easy_val.mat",
            "wider_face_val.mat",
            "wider_hard_val.mat",
            "wider_medium_val.mat",
        ]
        assert all(os.path.isfile(d["file_name"]) for d in dicts)
        assert (dicts[0]["height"], dicts[0]["width"]) == (320, 320)
        assert sum(len(d["annotations"]) for d in dicts) > n
