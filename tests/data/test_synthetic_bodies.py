"""Synthetic stick-figure bodies (d2ext.data.synthetic.bodies): the render_bodies_image contract,
keypoint placement and visibility against the drawn pixels, left/right mirror convention."""

import numpy as np
import pytest
from detectron2.data.datasets.builtin_meta import COCO_PERSON_KEYPOINT_NAMES

from d2ext.data.synthetic.bodies import (
    KP,
    PART_ID,
    PARTS,
    compose,
    draw_part_map,
    render_bodies,
    render_bodies_image,
    sample_person,
)

H = W = 192
SEED = 0
NUM = 40
KEYS = {"bbox", "keypoints", "num_keypoints", "area", "head_size", "iscrowd", "category_id"}
FACE = [KP["nose"], KP["left_eye"], KP["right_eye"]]


@pytest.fixture(scope="module")
def scenes():
    return [render_bodies(np.random.default_rng([SEED, i]), H, W) for i in range(NUM)]


def _kps(ann):
    return np.asarray(ann["keypoints"]).reshape(17, 3)


def _pixels(xy):
    """(row, col) int arrays of the pixels whose centres are nearest to COCO (x, y)."""
    cols, rows = np.floor(np.asarray(xy) + 0.5).astype(np.int64).T
    return rows, cols


def _person_at_center(front: bool):
    """A deterministic person of the wanted facing, moved so its mid-torso is the image centre."""
    rng = np.random.default_rng(123)
    while True:
        p = sample_person(rng, H, W)
        if p.front == front and 0.5 * H < np.ptp(p.joints[:, 1]) < 0.8 * H:
            mid = p.joints[[KP["left_shoulder"], KP["right_hip"]]].mean(0)
            return p.translated(W / 2 - mid[0], H / 2 - mid[1])


def test_deterministic_and_matches_scene(scenes):
    for i in (0, 7):
        a_img, a_anns = render_bodies_image(SEED, i, H, W)
        b_img, b_anns = render_bodies_image(SEED, i, H, W)
        assert np.array_equal(a_img, b_img) and a_anns == b_anns
        assert np.array_equal(a_img, scenes[i].image) and a_anns == scenes[i].annotations
    assert not np.array_equal(render_bodies_image(SEED, 1, H, W)[0], scenes[0].image)
    assert not np.array_equal(render_bodies_image(SEED + 1, 0, H, W)[0], scenes[0].image)


def test_contract_types_and_keys():
    image, anns = render_bodies_image(SEED, 3, 96, 160)
    assert image.shape == (96, 160, 3) and image.dtype == np.uint8
    assert 1 <= len(anns) <= 4
    for ann in anns:
        assert set(ann) == KEYS
        assert len(ann["bbox"]) == 4 and all(type(v) is float for v in ann["bbox"])
        assert len(ann["keypoints"]) == 51 and all(type(v) is float for v in ann["keypoints"])
        assert type(ann["area"]) is float and type(ann["head_size"]) is float
        assert type(ann["num_keypoints"]) is int
        assert ann["iscrowd"] == 0 and ann["category_id"] == 1
    assert len(COCO_PERSON_KEYPOINT_NAMES) == 17


def test_boxes_areas_and_counts(scenes):
    heights, counts = [], set()
    for scene in scenes:
        counts.add(len(scene.annotations))
        for k, (p, ann) in enumerate(zip(scene.persons, scene.annotations), start=1):
            x, y, w, h = ann["bbox"]
            assert x >= 0 and y >= 0 and x + w <= W and y + h <= H and w > 0 and h > 0
            silhouette = draw_part_map(p, H, W) > 0
            rows, cols = np.nonzero(silhouette)
            assert [x, y, w, h] == [cols.min(), rows.min(), np.ptp(cols) + 1, np.ptp(rows) + 1]
            assert ann["area"] == silhouette.sum() > 0
            assert ann["head_size"] == pytest.approx(0.6 * 2 * np.sqrt(2) * p.head_radius)
            assert ann["head_size"] > 0
            v = _kps(ann)[:, 2]
            assert ann["num_keypoints"] == int((v > 0).sum()) >= 1
            heights.append(h)
    assert counts == {1, 2, 3, 4}
    assert min(heights) < 0.2 * H and max(heights) > 0.6 * H  # small and large people


def test_keypoints_on_drawn_pixels(scenes):
    """v=0 exactly for joints outside the image (x = y = 0); every labelled joint lies in its
    box; a v=2 joint's pixel shows this person in one of its part colours (+-4 sensor noise),
    a v=1 body joint's pixel a later person."""
    for scene in scenes:
        for k, (p, ann) in enumerate(zip(scene.persons, scene.annotations), start=1):
            kps = _kps(ann)
            rows, cols = _pixels(p.joints)
            inside = (rows >= 0) & (rows < H) & (cols >= 0) & (cols < W)
            assert np.array_equal(kps[:, 2] > 0, inside)
            assert (kps[~inside, :2] == 0).all()
            assert np.array_equal(kps[inside, :2], p.joints[inside])
            x, y, w, h = ann["bbox"]
            lab = kps[:, 2] > 0
            assert (cols[lab] >= x).all() and (cols[lab] < x + w).all()
            assert (rows[lab] >= y).all() and (rows[lab] < y + h).all()
            for j in np.flatnonzero(lab):
                on_top = scene.label_map[rows[j], cols[j]]
                face_hidden = not p.front and j in FACE
                assert kps[j, 2] == (1 if on_top > k or face_hidden else 2)
                if kps[j, 2] == 2:
                    assert on_top == k
                    pixel = scene.image[rows[j], cols[j]].astype(int)
                    diff = np.abs(p.palette[1:].astype(int) - pixel).max(1)
                    assert diff.min() <= 4, (k, COCO_PERSON_KEYPOINT_NAMES[j])


def test_later_person_occludes(scenes):
    person = _person_at_center(front=True)
    background = np.full((H, W, 3), 7, np.uint8)
    both = compose(background, [person, person])
    first, second = (_kps(a)[:, 2] for a in both.annotations)
    assert (first == 1).all() and (second == 2).all()  # the copy on top covers every joint
    alone = compose(background, [person])
    assert (_kps(alone.annotations[0])[:, 2] == 2).all()
    # a shifted copy covers some joints only: exactly those whose pixel it paints
    shifted = person.translated(0.12 * W, 0)
    scene = compose(background, [person, shifted])
    v = _kps(scene.annotations[0])[:, 2]
    rows, cols = _pixels(person.joints)
    covered = (draw_part_map(shifted, H, W) > 0)[rows, cols]
    assert 0 < covered.sum() < 17 and np.array_equal(v == 1, covered)
    # generated images contain occlusions by later people as well
    occluded = [
        (scene, k, j)
        for scene in scenes
        for k, ann in enumerate(scene.annotations, start=1)
        for j in np.flatnonzero(_kps(ann)[:, 2] == 1)
        if j not in FACE
    ]
    assert len(occluded) >= 3
    for scene, k, j in occluded:
        rows, cols = _pixels(scene.persons[k - 1].joints[j : j + 1])
        assert scene.label_map[rows[0], cols[0]] > k


def test_drawn_face_and_limb_colours():
    """Over a flat background a front-facing person's keypoint pixels carry the expected part
    colours: eyes and nose their marks, wrists/ankles their distal limb (or a part drawn later),
    and the left limbs differ in colour from the right ones."""
    person = _person_at_center(front=True)
    background = np.full((H, W, 3), 7, np.uint8)
    scene = compose(background, [person])
    parts = draw_part_map(person, H, W)
    rows, cols = _pixels(person.joints)
    for name, part in (("left_eye", "eye"), ("right_eye", "eye"), ("nose", "nose")):
        j = KP[name]
        assert parts[rows[j], cols[j]] == PART_ID[part]
        assert (scene.image[rows[j], cols[j]] == person.palette[PART_ID[part]]).all()
    sides = ("left", "right") if person.left_first else ("right", "left")
    order = [f"{s}_{limb}" for s in sides for limb in ("thigh", "shin")] + ["torso"]
    order += [f"{s}_{limb}" for s in sides for limb in ("upper_arm", "forearm")]
    order += ["neck", "head", "ear", "eye", "nose"]
    for side in ("left", "right"):
        for joint, limb in (("wrist", "forearm"), ("ankle", "shin")):
            j = KP[f"{side}_{joint}"]
            part = PARTS[parts[rows[j], cols[j]] - 1]
            assert order.index(part) >= order.index(f"{side}_{limb}")
            assert (scene.image[rows[j], cols[j]] == person.palette[PART_ID[part]]).all()
    for limb in ("upper_arm", "forearm", "thigh", "shin"):
        left, right = (person.palette[PART_ID[f"{s}_{limb}"]] for s in ("left", "right"))
        assert not np.array_equal(left, right)
    back = compose(background, [_person_at_center(front=False)])
    assert not np.isin(
        draw_part_map(back.persons[0], H, W), [PART_ID["eye"], PART_ID["nose"]]
    ).any()


def test_left_right_mirror(scenes):
    """Front-facing: the person's left joints lie at larger image x than the right ones; back-
    facing: smaller (the exact mirror, so the COCO flip map holds); both facings occur."""
    facings = set()
    for scene in scenes:
        for p, ann in zip(scene.persons, scene.annotations):
            facings.add(p.front)
            kps = _kps(ann)
            for pair in ("shoulder", "hip", "eye", "ear"):
                left, right = kps[KP[f"left_{pair}"]], kps[KP[f"right_{pair}"]]
                if left[2] > 0 and right[2] > 0:
                    assert (left[0] > right[0]) == p.front, pair
            if not p.front:
                assert (kps[FACE, 2] < 2).all()
    assert facings == {True, False}


@pytest.mark.parametrize(
    "args, name",
    [
        ((0, 0, 31, 192), "height"),
        ((0, 0, 192, 16), "width"),
        ((-1, 0, 192, 192), "seed"),
        ((0, 2.5, 192, 192), "index"),
    ],
)
def test_bad_arguments(args, name):
    with pytest.raises(ValueError, match=name):
        render_bodies_image(*args)
