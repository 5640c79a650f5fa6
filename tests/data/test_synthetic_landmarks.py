"""Synthetic faces (68 iBUG landmarks, images + .pts) and bodies (COCO keypoints json), the
iBUG keypoint metadata, and the builtin ``synth_faces_*`` / ``synth_bodies_*`` datasets."""

import filecmp
import json
import os
import uuid
from dataclasses import replace

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.data.datasets.builtin_meta import COCO_PERSON_KEYPOINT_NAMES
from detectron2.data.detection_utils import (
    create_keypoint_hflip_indices,
    read_image,
    transform_keypoint_annotations,
)
from detectron2.utils.visualizer import Visualizer
from PIL import Image

import d2ext  # noqa: F401  (registration)
from d2ext.data import (
    IBUG_68_CONNECTION_RULES,
    IBUG_68_FLIP_MAP,
    IBUG_68_INTEROCULAR,
    IBUG_68_KEYPOINT_NAMES,
    ibug68_metadata,
)
from d2ext.data.synthetic import (
    BUILTIN_DATASETS,
    SyntheticSpec,
    builtin_spec,
    ensure_synthetic_generated,
    generate,
    register_synthetic_bodies,
    register_synthetic_faces,
    render_face,
    render_face_image,
    synthetic_dataset_dir,
)
from d2ext.data.synthetic.bodies import render_bodies_image
from d2ext.data.synthetic.faces import (
    FEATURE_ID,
    LANDMARK_FEATURE,
    FacePose,
    FaceShape,
    canonical_landmarks,
)

SIZE = (128, 128)
# the standard 68-point mirror pairs (1-based), e.g. mmpose's 300-W flip_pairs + 1
STANDARD_PAIRS = {
    *((k, 18 - k) for k in range(1, 9)),
    *((17 + k, 28 - k) for k in range(1, 6)),
    (32, 36), (33, 35), (37, 46), (38, 45), (39, 44), (40, 43), (41, 48), (42, 47),
    (49, 55), (50, 54), (51, 53), (60, 56), (59, 57), (61, 65), (62, 64), (68, 66),
}  # fmt: skip


def _unique(prefix):
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("synth_landmarks"))


@pytest.fixture(scope="module")
def faces(root):
    name = _unique("_test_faces")
    spec = register_synthetic_faces(name, root, num_images=12, image_size=SIZE, seed=3)
    return name, spec


@pytest.fixture(scope="module")
def bodies(root):
    name = _unique("_test_bodies")
    spec = register_synthetic_bodies(name, root, num_images=6, image_size=(160, 192), seed=4)
    return name, spec


@pytest.fixture(scope="module")
def flip_indices():
    """D2's hflip indices from the iBUG metadata (``create_keypoint_hflip_indices``)."""
    name = _unique("_ibug_meta")
    MetadataCatalog.get(name).set(**ibug68_metadata())
    yield np.array(create_keypoint_hflip_indices([name]))
    MetadataCatalog.remove(name)


def test_ibug_metadata(flip_indices):
    names = IBUG_68_KEYPOINT_NAMES
    assert len(names) == len(set(names)) == 68
    pairs = {tuple(sorted((names.index(a) + 1, names.index(b) + 1))) for a, b in IBUG_68_FLIP_MAP}
    assert pairs == {tuple(sorted(p)) for p in STANDARD_PAIRS}
    assert IBUG_68_INTEROCULAR == (names[36], names[45])
    assert IBUG_68_INTEROCULAR == ("right_eye_outer_corner", "left_eye_outer_corner")
    assert all(a in names and b in names and len(c) == 3 for a, b, c in IBUG_68_CONNECTION_RULES)
    meta = ibug68_metadata()
    assert meta["thing_classes"] == ["face"] and meta["evaluator_type"] == "landmark"
    flip = flip_indices
    mirrored = {i for p in STANDARD_PAIRS for i in p}
    assert all(flip[a - 1] == b - 1 and flip[b - 1] == a - 1 for a, b in STANDARD_PAIRS)
    assert all(flip[k - 1] == k - 1 for k in range(1, 69) if k not in mirrored)


def _flip(keypoints, width, flip_indices):
    """D2's horizontal flip of (68, 3) keypoints with the iBUG flip map."""
    tfm = T.TransformList([T.HFlipTransform(width)])
    return transform_keypoint_annotations(keypoints.copy(), tfm, SIZE, flip_indices)


def test_symmetric_face_flips_onto_itself(flip_indices):
    rng = np.random.default_rng(0)
    for _ in range(5):
        shape = FaceShape.sample(rng)
        pose = FacePose(yaw=0.0, roll=0.0, scale=rng.uniform(25, 40), center=(64.0, 60.3))
        kp = render_face(rng, *SIZE, shape=shape, pose=pose, occlusion=False).keypoints
        assert (kp[:, 2] == 2).all()
        np.testing.assert_array_equal(_flip(kp, SIZE[1], flip_indices), kp)
        # a face turned the other way is the mirror image of the face
        turned = FacePose(yaw=0.3, roll=0.2, scale=pose.scale, center=(70.0, 60.0))
        mirror = replace(turned, yaw=-0.3, roll=-0.2, center=(58.0, 60.0))
        a = render_face(rng, *SIZE, shape=shape, pose=turned, occlusion=False).keypoints
        b = render_face(rng, *SIZE, shape=shape, pose=mirror, occlusion=False).keypoints
        np.testing.assert_allclose(_flip(a, SIZE[1], flip_indices), b, atol=1 / 16 + 1e-9)


def test_landmarks_in_ibug_order():
    """A frontal upright face: the image-left eye/brow/jaw/mouth points are the subject's right."""
    xy = canonical_landmarks(FaceShape())[:, :2]
    x, y = xy[:, 0], xy[:, 1]
    assert x[0] < 0 < x[16] and np.argmax(y[:17]) == 8  # jaw: right ear -> chin -> left ear
    assert np.all(np.diff(x[1:16]) > 0) and np.all(np.diff(y[:9]) > 0)
    assert np.all(np.diff(y[8:17]) < 0)
    assert np.all(np.diff(x[17:27]) > 0)  # brows: right outer .. left outer
    assert np.all(np.diff(y[27:31]) > 0) and np.allclose(x[27:31], 0)  # bridge down to the tip
    assert np.all(np.diff(x[31:36]) > 0) and y[33] > y[30]  # nose bottom below the tip
    assert x[36] < x[39] < 0 < x[42] < x[45]  # eye corners
    assert y[37] < y[36] < y[41] and y[43] < y[42] < y[47]  # upper lids above lower lids
    assert x[48] < x[60] < x[64] < x[54] and y[51] < y[62] <= y[66] < y[57]  # lips
    assert np.all(y[27:36] < y[48:68].min()) and np.all(y[17:27] < y[36:48].min())


def test_points_lie_on_their_drawn_features():
    counts = np.zeros(3, int)
    for i in range(60):
        face = render_face_image(11, i, *SIZE)
        kp = face.keypoints
        counts += np.bincount(kp[:, 2].astype(int), minlength=3)
        visible = kp[:, 2] == 2
        col, row = np.floor(kp[visible, :2]).astype(int).T
        assert np.array_equal(face.feature_map[row, col], LANDMARK_FEATURE[visible]), i
        # the feature map describes the image: eye outlines are drawn darker than the whites
        fmap, gray = face.feature_map, face.image.astype(float).mean(2)
        outline, white = fmap == FEATURE_ID["eye_outline"], fmap == FEATURE_ID["eye_white"]
        if outline.sum() > 10 and white.sum() > 10:
            assert gray[outline].mean() < gray[white].mean() - 40, i
        # visibility: 0 exactly outside the image, 1 where the pixel shows something else
        h, w = SIZE
        inside = (kp[:, 0] >= 0) & (kp[:, 0] < w) & (kp[:, 1] >= 0) & (kp[:, 1] < h)
        assert np.array_equal(kp[:, 2] == 0, ~inside)
        hidden = inside & (kp[:, 2] == 1)
        col, row = np.floor(kp[hidden, :2]).astype(int).T
        assert (face.feature_map[row, col] != LANDMARK_FEATURE[hidden]).all()
        assert (face.feature_map[row, col] == FEATURE_ID["occluder"]).all()  # >= 128 px faces
    assert counts.min() > 0, counts  # some outside, some occluded, most visible
    assert counts[2] > 0.8 * counts.sum()


def test_faces_deterministic(root, faces):
    name, spec = faces
    other = os.path.join(root, "again")
    assert generate(spec, other)
    assert not generate(spec, other)  # already there
    ensure_synthetic_generated(name)
    first = synthetic_dataset_dir(name)
    files = sorted(os.listdir(os.path.join(first, "images")))
    assert len(files) == 24 and files[:2] == ["000000.png", "000000.pts"]
    match, mismatch, errors = filecmp.cmpfiles(
        os.path.join(first, "images"), os.path.join(other, "images"), files, shallow=False
    )
    assert (mismatch, errors) == ([], [])
    assert filecmp.cmp(
        os.path.join(first, "visibility.json"), os.path.join(other, "visibility.json"), False
    )
    a, b = render_face_image(3, 2, *SIZE), render_face_image(3, 2, *SIZE)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.keypoints, b.keypoints)
    assert not np.array_equal(a.image, render_face_image(4, 2, *SIZE).image)
    # the shapes spec json is untouched by the landmark kinds' renderer versions
    assert "renderer_version" not in SyntheticSpec("shapes", 2, SIZE, 0).to_json()
    assert spec.to_json()["renderer_version"] == 1


def test_faces_load_through_the_ibug_loader(faces):
    name, spec = faces
    dicts = DatasetCatalog.get(name)
    meta = MetadataCatalog.get(name)
    assert meta.evaluator_type == "landmark" and meta.keypoint_names == list(IBUG_68_KEYPOINT_NAMES)
    assert [d["image_id"] for d in dicts] == [f"{i:06d}" for i in range(spec.num_images)]
    for i, d in enumerate(dicts):
        face = render_face_image(spec.seed, i, *SIZE)
        assert (d["height"], d["width"]) == SIZE
        assert np.array_equal(np.asarray(Image.open(d["file_name"])), face.image)
        (ann,) = d["annotations"]
        # bit-exact through the .pts text (+ 0.5 written, - 0.5 read) and visibility.json
        assert np.array_equal(np.array(ann["keypoints"]).reshape(68, 3), face.keypoints)
        labelled = face.keypoints[face.keypoints[:, 2] > 0, :2]
        assert ann["bbox"] == [*labelled.min(0).tolist(), *labelled.max(0).tolist()]
    drawn = Visualizer(read_image(dicts[0]["file_name"], "RGB"), meta).draw_dataset_dict(dicts[0])
    assert drawn.get_image().shape == (*SIZE, 3)


def test_bodies_written_as_coco_keypoints(bodies):
    name, spec = bodies
    dicts = DatasetCatalog.get(name)
    meta = MetadataCatalog.get(name)
    assert meta.evaluator_type == "coco" and meta.thing_classes == ["person"]
    assert meta.keypoint_names == COCO_PERSON_KEYPOINT_NAMES
    with open(meta.json_file) as f:
        data = json.load(f)
    (cat,) = data["categories"]
    assert (cat["id"], cat["name"]) == (1, "person")
    assert cat["keypoints"] == list(COCO_PERSON_KEYPOINT_NAMES)
    assert len(cat["skeleton"]) == 19 and {k for e in cat["skeleton"] for k in e} == set(
        range(1, 18)
    )
    assert len({a["id"] for a in data["annotations"]}) == len(data["annotations"]) > 0
    assert len(dicts) == spec.num_images
    for i, d in enumerate(dicts):
        image, anns = render_bodies_image(spec.seed, i, *spec.image_size)
        assert (d["height"], d["width"]) == spec.image_size == image.shape[:2]
        assert len(d["annotations"]) == len(anns)
        for got, want in zip(d["annotations"], anns):
            kp = np.array(want["keypoints"], float).reshape(17, 3)
            kp[:, :2] += 0.5  # D2's load_coco_json: COCO pixel indices -> D2 coordinates
            assert np.allclose(np.array(got["keypoints"]).reshape(17, 3), kp)
            assert got["head_size"] == want["head_size"] and got["category_id"] == 0
    drawn = Visualizer(read_image(dicts[0]["file_name"], "RGB"), meta).draw_dataset_dict(dicts[0])
    assert drawn.get_image().shape == (*spec.image_size, 3)


def test_builtins_registered_and_loadable():
    kinds = {"faces": (128, 128), "bodies": (192, 192)}
    for kind, size in kinds.items():
        names = [n for n in BUILTIN_DATASETS if n.startswith(f"synth_{kind}_")]
        assert sorted(names) == sorted(
            f"synth_{kind}_{s}" for s in ("train", "val", "mini_train", "mini_val")
        )
        assert all(builtin_spec(n).image_size == size for n in names)
    seeds = [builtin_spec(n).seed for n in BUILTIN_DATASETS]
    assert len(seeds) == len(set(seeds))
    assert (
        builtin_spec("synth_faces_train").num_images,
        builtin_spec("synth_faces_val").num_images,
    ) == (1000, 200)
    names = ["synth_faces_mini_val", "synth_bodies_mini_val"]
    assert ensure_synthetic_generated(names) == names
    faces, bodies = (DatasetCatalog.get(n) for n in names)
    assert len(faces) == len(bodies) == 8
    assert len(faces[0]["annotations"][0]["keypoints"]) == 68 * 3
    assert {len(a["keypoints"]) for d in bodies for a in d["annotations"]} == {17 * 3}
    assert MetadataCatalog.get(names[0]).evaluator_type == "landmark"
    assert MetadataCatalog.get(names[1]).evaluator_type == "coco"
