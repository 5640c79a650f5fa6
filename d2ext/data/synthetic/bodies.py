"""Synthetic stick-figure people annotated with the 17 COCO person keypoints.

Coordinates: joints are kept in the COCO keypoint convention, which is also OpenCV's drawing
convention: ``(x, y) = (j, i)`` is the *centre* of pixel (row i, col j). D2 continuous
coordinates are these + 0.5 (D2's ``load_coco_json`` adds the 0.5, its ``COCOEvaluator``
removes it). Boxes are COCO XYWH over pixel squares: pixel (i, j) covers ``[j, j+1) x [i, i+1)``.

A person is a skeleton in the image plane: a leaning torso, neck, head disc, two-segment arms and
legs drawn as thick lines (``cv2.line`` with round caps, so every joint pixel is painted), per
part widths (torso thickest, forearms thinnest). Front-facing people have the person's left on
the image right and a drawn face (eyes, nose); back-facing people are the exact mirror (left on
the image left) with a hair-coloured head, whose nose and eyes are labelled but hidden (v=1).
Because the two facings are mirrors, D2's ``COCO_PERSON_KEYPOINT_FLIP_MAP`` holds
geometrically. Limbs are warm-hued on the person's left and cool-hued on the right (hues shifted
per person): a left/right cue that horizontal-flip augmentation inverts (labels swap, colours do
not), whereas the facing cue (face drawn or not) survives flips.

People are painted bottom to top; a keypoint whose pixel is covered by a later person is v=1,
one outside the image is v=0 with x = y = 0 (as COCO). ``bbox`` and ``area`` are those of the
person's whole drawn silhouette inside the image (before later people cover it).
"""

import colorsys
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np
from detectron2.data.datasets.builtin_meta import COCO_PERSON_KEYPOINT_NAMES

from .annotations import mask_bbox
from .render import texture

NUM_KEYPOINTS = len(COCO_PERSON_KEYPOINT_NAMES)  # 17
KP = {name: i for i, name in enumerate(COCO_PERSON_KEYPOINT_NAMES)}
# Part ids of the per-person part map, in the order they are painted (0 = not drawn).
PARTS = (
    "left_thigh",
    "left_shin",
    "right_thigh",
    "right_shin",
    "torso",
    "left_upper_arm",
    "left_forearm",
    "right_upper_arm",
    "right_forearm",
    "neck",
    "head",
    "ear",
    "eye",
    "nose",
)
PART_ID = {name: i + 1 for i, name in enumerate(PARTS)}
# Line widths as fractions of the person's standing height.
_WIDTH = {
    "torso": 0.15,
    "thigh": 0.075,
    "shin": 0.055,
    "upper_arm": 0.055,
    "forearm": 0.04,
    "neck": 0.05,
}
_FACE_HIDDEN_FROM_BEHIND = (KP["nose"], KP["left_eye"], KP["right_eye"])
MIN_IMAGE_SIZE = 32
MIN_KEYPOINTS_IN_IMAGE = 6  # a sampled person with fewer joints inside the image is rejected
MIN_VISIBLE_FRACTION = 0.5  # a new person may cover at most half of an earlier one's silhouette
_SHIFT = 4  # OpenCV fixed-point bits: joints are drawn at 1/16-pixel precision


@dataclass(frozen=True)
class Person:
    """
    joints: (17, 2) float64 (x, y) of the keypoints, ``COCO_PERSON_KEYPOINT_NAMES`` order, COCO
        pixel-centred coordinates (may lie outside the image).
    head_center: (2,) float64 (x, y), same convention; head_radius: pixels.
    front: facing the camera (person's left on the image right).
    widths: line thickness in pixels (int >= 1) of "torso", "neck" and each
        "{left,right}_{thigh,shin,upper_arm,forearm}"; head and face marks are discs.
    palette: (len(PARTS) + 1, 3) uint8 RGB colour per part id (row 0 unused).
    left_first: the left limbs are painted before (behind) the right ones.
    """

    joints: np.ndarray
    head_center: np.ndarray
    head_radius: float
    front: bool
    widths: Dict[str, int]
    palette: np.ndarray
    left_first: bool

    def translated(self, dx: float, dy: float) -> "Person":
        shift = np.array([dx, dy], np.float64)
        return replace(self, joints=self.joints + shift, head_center=self.head_center + shift)


@dataclass
class BodyScene:
    """
    image: (H, W, 3) uint8 RGB.
    label_map: (H, W) int32; 0 where no person is drawn, ``k`` where ``persons[k-1]`` is on top.
    persons: bottom to top; annotations: their COCO keypoint annotations, same order.
    """

    image: np.ndarray
    label_map: np.ndarray
    persons: List[Person]
    annotations: List[dict]


def _rgb(h: float, s: float, v: float) -> List[int]:
    return [int(round(255 * c)) for c in colorsys.hsv_to_rgb(h % 1.0, s, v)]


def _palette(rng: np.random.Generator, front: bool) -> np.ndarray:
    """Warm hues on the person's left, cool on the right; upper segments brighter than lower so
    elbows and knees show; skin, hair and face-mark colours for the head."""
    pal = np.zeros((len(PARTS) + 1, 3), np.uint8)
    for side, hue in (("left", rng.uniform(-0.07, 0.1)), ("right", rng.uniform(0.5, 0.67))):
        sat, val = rng.uniform(0.55, 1.0), rng.uniform(0.7, 1.0)
        for limb, dh, dv in (
            ("upper_arm", 0.0, 1.0),
            ("forearm", 0.0, 0.65),
            ("thigh", 0.05, 0.9),
            ("shin", 0.05, 0.6),
        ):
            pal[PART_ID[f"{side}_{limb}"]] = _rgb(hue + dh, sat, val * dv)
    pal[PART_ID["torso"]] = _rgb(rng.uniform(0, 1), rng.uniform(0.1, 0.5), rng.uniform(0.35, 0.9))
    skin = (rng.uniform(0.03, 0.1), rng.uniform(0.25, 0.6), rng.uniform(0.45, 0.95))
    hair = _rgb(rng.uniform(0.02, 0.12), rng.uniform(0.3, 0.8), rng.uniform(0.08, 0.35))
    pal[PART_ID["neck"]] = _rgb(*skin)
    pal[PART_ID["head"]] = _rgb(*skin) if front else hair
    pal[PART_ID["ear"]] = _rgb(skin[0], skin[1], skin[2] * 0.75)
    pal[PART_ID["eye"]] = _rgb(0.6, 0.3, rng.uniform(0.0, 0.15))
    pal[PART_ID["nose"]] = _rgb(0.0, 0.6, skin[2] * 0.6)
    return pal


def sample_person(rng: np.random.Generator, height: int, width: int) -> Person:
    """A random person whose mid-torso lies in the image: standing height log-uniform in
    [0.18, 0.85] x the shorter image side, torso lean within +-0.4 rad, random arm/leg angles
    and per-segment foreshortening (out-of-plane motion), front- or back-facing."""
    tall = float(np.exp(rng.uniform(np.log(0.18), np.log(0.85)))) * min(height, width)
    front = bool(rng.random() < 0.5)
    s_left = 1.0 if front else -1.0  # image side (+1 = right) of the person's left
    lean = rng.uniform(-0.4, 0.4)
    up = np.array([np.sin(lean), -np.cos(lean)])
    lateral = np.array([np.cos(lean), np.sin(lean)])  # towards the image right
    down = -up
    center = rng.uniform([0.0, 0.0], [width - 1.0, height - 1.0])
    turn = rng.uniform(0.6, 1.0)  # body rotated about its vertical axis narrows it
    torso_len = 0.3 * tall * rng.uniform(0.8, 1.0)
    neck, hip_c = center + 0.5 * torso_len * up, center - 0.5 * torso_len * up
    j = np.zeros((NUM_KEYPOINTS, 2))
    for side, s in (("left", s_left), ("right", -s_left)):
        j[KP[f"{side}_shoulder"]] = neck + s * 0.12 * tall * turn * lateral
        j[KP[f"{side}_hip"]] = hip_c + s * 0.08 * tall * turn * lateral

    def limb(root, s, angle, bend, len1, len2):
        # angle 0 = along the torso towards the feet, positive = away from the body's midline
        a = rng.uniform(*angle)
        b = a + rng.uniform(*bend)
        mid = root + len1 * rng.uniform(0.6, 1.0) * (np.cos(a) * down + np.sin(a) * s * lateral)
        end = mid + len2 * rng.uniform(0.6, 1.0) * (np.cos(b) * down + np.sin(b) * s * lateral)
        return mid, end

    for side, s in (("left", s_left), ("right", -s_left)):
        arm = limb(j[KP[f"{side}_shoulder"]], s, (-0.5, 2.9), (-2.4, 0.4), 0.16 * tall, 0.14 * tall)
        leg = limb(j[KP[f"{side}_hip"]], s, (-0.25, 0.8), (-0.8, 0.6), 0.23 * tall, 0.22 * tall)
        j[KP[f"{side}_elbow"]], j[KP[f"{side}_wrist"]] = arm
        j[KP[f"{side}_knee"]], j[KP[f"{side}_ankle"]] = leg

    r = 0.065 * tall * rng.uniform(0.9, 1.15)
    tilt = rng.uniform(-0.35, 0.35)
    head_up = np.cos(tilt) * up + np.sin(tilt) * lateral
    head_lat = np.cos(tilt) * lateral - np.sin(tilt) * up
    head_c = neck + (0.035 * tall + r) * head_up
    j[KP["nose"]] = head_c - 0.15 * r * head_up
    for side, s in (("left", s_left), ("right", -s_left)):
        j[KP[f"{side}_eye"]] = head_c + 0.25 * r * head_up + s * 0.38 * r * head_lat
        j[KP[f"{side}_ear"]] = head_c + 0.05 * r * head_up + s * 0.95 * r * head_lat

    bulk = rng.uniform(0.85, 1.2)
    widths = {"torso": _WIDTH["torso"] * turn, "neck": _WIDTH["neck"]}
    for side in ("left", "right"):
        for limb_name in ("thigh", "shin", "upper_arm", "forearm"):
            widths[f"{side}_{limb_name}"] = _WIDTH[limb_name]
    widths = {k: max(1, int(round(v * tall * bulk))) for k, v in widths.items()}
    return Person(
        joints=j,
        head_center=head_c,
        head_radius=float(r),
        front=front,
        widths=widths,
        palette=_palette(rng, front),
        left_first=bool(rng.random() < 0.5),
    )


def _fx(points) -> np.ndarray:
    """Fixed-point int32 coordinates for OpenCV drawing with ``shift=_SHIFT``."""
    return np.round(np.asarray(points, np.float64) * (1 << _SHIFT)).astype(np.int32)


def draw_part_map(person: Person, height: int, width: int) -> np.ndarray:
    """(H, W) uint8 map of the person's part ids (``PART_ID``; 0 = not drawn), painted legs,
    torso, arms, neck, head, ears, face (front only), later parts over earlier ones."""
    canvas = np.zeros((height, width), np.uint8)
    j, w = person.joints, person.widths

    def line(a: str, b: str, part: str):
        pa, pb = (person.head_center if n == "head" else j[KP[n]] for n in (a, b))
        cv2.line(canvas, tuple(_fx(pa)), tuple(_fx(pb)), PART_ID[part], w[part], 8, _SHIFT)

    def disc(center, radius: float, part: str):
        rad = int(round(max(radius, 0.5) * (1 << _SHIFT)))
        cv2.circle(canvas, tuple(_fx(center)), rad, PART_ID[part], -1, 8, _SHIFT)

    sides = ("left", "right") if person.left_first else ("right", "left")
    for s in sides:
        line(f"{s}_hip", f"{s}_knee", f"{s}_thigh")
        line(f"{s}_knee", f"{s}_ankle", f"{s}_shin")
    quad = j[[KP["left_shoulder"], KP["right_shoulder"], KP["right_hip"], KP["left_hip"]]]
    cv2.fillConvexPoly(canvas, _fx(quad), PART_ID["torso"], 8, _SHIFT)
    neck = j[[KP["left_shoulder"], KP["right_shoulder"]]].mean(0)
    hip_c = j[[KP["left_hip"], KP["right_hip"]]].mean(0)
    cv2.line(canvas, tuple(_fx(neck)), tuple(_fx(hip_c)), PART_ID["torso"], w["torso"], 8, _SHIFT)
    for s in sides:
        line(f"{s}_shoulder", f"{s}_elbow", f"{s}_upper_arm")
        line(f"{s}_elbow", f"{s}_wrist", f"{s}_forearm")
    cv2.line(
        canvas,
        tuple(_fx(neck)),
        tuple(_fx(person.head_center)),
        PART_ID["neck"],
        w["neck"],
        8,
        _SHIFT,
    )
    r = person.head_radius
    disc(person.head_center, r, "head")
    for s in ("left", "right"):
        disc(j[KP[f"{s}_ear"]], 0.22 * r, "ear")
    if person.front:
        for s in ("left", "right"):
            disc(j[KP[f"{s}_eye"]], 0.14 * r, "eye")
        disc(j[KP["nose"]], 0.16 * r, "nose")
    return canvas


def person_annotation(person: Person, silhouette: np.ndarray, label_map: np.ndarray, k: int):
    """COCO keypoint annotation of ``person``, drawn as ``label_map`` id ``k`` with (H, W) bool
    ``silhouette`` (its whole drawn body inside the image). Keypoint v: 0 (x = y = 0) when its
    pixel is outside the image, 1 when a later person (label > k) covers that pixel or it is a
    face point of a back-facing person, else 2."""
    if not silhouette.any():
        raise ValueError(f"person {k} has no pixel inside the image")
    height, width = label_map.shape
    cols, rows = np.floor(person.joints + 0.5).astype(np.int64).T
    inside = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
    on_top = np.zeros(NUM_KEYPOINTS, np.int32)
    on_top[inside] = label_map[rows[inside], cols[inside]]
    hidden = np.zeros(NUM_KEYPOINTS, bool)
    if not person.front:
        hidden[list(_FACE_HIDDEN_FROM_BEHIND)] = True
    vis = np.where(inside, np.where((on_top > k) | hidden, 1, 2), 0)
    kps = np.zeros((NUM_KEYPOINTS, 3))
    kps[inside, :2] = person.joints[inside]
    kps[:, 2] = vis
    return {
        "bbox": [float(v) for v in mask_bbox(silhouette)],
        "keypoints": [float(v) for v in kps.reshape(-1)],
        "num_keypoints": int((vis > 0).sum()),
        "area": float(silhouette.sum()),
        # MPII's PCKh normaliser: 0.6 x the diagonal of the head box (the head disc's square)
        "head_size": float(0.6 * 2.0 * np.sqrt(2.0) * person.head_radius),
        "iscrowd": 0,
        "category_id": 1,
    }


def compose(
    background: np.ndarray, persons: List[Person], part_maps: Optional[List[np.ndarray]] = None
) -> BodyScene:
    """Paint ``persons`` bottom to top over an (H, W, 3) uint8 ``background`` (not modified)
    and annotate them; ``part_maps`` are their ``draw_part_map`` outputs if already drawn."""
    image = background.copy()
    height, width = image.shape[:2]
    if part_maps is None:
        part_maps = [draw_part_map(p, height, width) for p in persons]
    label_map = np.zeros((height, width), np.int32)
    silhouettes = []
    for k, parts in enumerate(part_maps, start=1):
        person = persons[k - 1]
        silhouette = parts > 0
        image[silhouette] = person.palette[parts[silhouette]]
        label_map[silhouette] = k
        silhouettes.append(silhouette)
    annotations = [
        person_annotation(p, m, label_map, k)
        for k, (p, m) in enumerate(zip(persons, silhouettes), start=1)
    ]
    return BodyScene(image, label_map, list(persons), annotations)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8: a textured/gradient backdrop with 4-12 clutter shapes (lines of limb-like
    widths, rings, discs, boxes) in random colours."""
    # the texture is evaluated at half resolution (pixel centres of 2x2 blocks) and upsampled:
    # a quarter of the cost, and its noise becomes blotchy rather than per-pixel
    yy, xx = np.mgrid[: (height + 1) // 2, : (width + 1) // 2].astype(np.float32) * 2 + 0.5
    kind = ("stripes", "noise", "gradient")[rng.integers(3)]
    image = texture(rng, yy, xx, rng.integers(40, 216, 3).astype(np.float32), kind)
    image = np.clip(image, 0, 255).round().astype(np.uint8)
    image = cv2.resize(image, (xx.shape[1] * 2, yy.shape[0] * 2), interpolation=cv2.INTER_LINEAR)
    image = np.ascontiguousarray(image[:height, :width])
    size = min(height, width)
    for _ in range(int(rng.integers(4, 13))):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        p, q = _fx(rng.uniform([0, 0], [width, height], (2, 2)))
        extent = int(rng.uniform(0.03, 0.25) * size * (1 << _SHIFT))
        shape = rng.integers(4)
        if shape == 0:
            cv2.line(image, tuple(p), tuple(q), color, int(rng.integers(1, 7)), 8, _SHIFT)
        elif shape == 1:
            cv2.circle(image, tuple(p), extent, color, int(rng.choice([-1, 1, 2, 3])), 8, _SHIFT)
        elif shape == 2:
            cv2.rectangle(image, tuple(p), tuple(p + extent), color, -1, 8, _SHIFT)
        else:
            axes = (extent, max(1, extent // 3))
            angle = float(rng.uniform(0, 180))
            cv2.ellipse(image, tuple(p), axes, angle, 0, 360, color, -1, 8, _SHIFT)
    return image


def render_bodies(rng: np.random.Generator, height: int, width: int) -> BodyScene:
    """A scene of 1-4 people over clutter, with light sensor noise. A sampled person is rejected
    when fewer than ``MIN_KEYPOINTS_IN_IMAGE`` joints fall inside the image or when it would
    cover more than ``1 - MIN_VISIBLE_FRACTION`` of an earlier person's silhouette."""
    background = _background(rng, height, width)
    num_persons = int(rng.integers(1, 5))
    persons: List[Person] = []
    part_maps: List[np.ndarray] = []
    visible: List[np.ndarray] = []  # the placed people's currently visible pixels
    areas: List[int] = []
    attempts = 0
    while len(persons) < num_persons and (attempts < 10 * num_persons or not persons):
        attempts += 1
        if attempts > 1000:
            raise RuntimeError(f"could not place a person in a {height}x{width} image")
        person = sample_person(rng, height, width)
        cols, rows = np.floor(person.joints + 0.5).T
        inside = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
        if inside.sum() < MIN_KEYPOINTS_IN_IMAGE:
            continue
        parts = draw_part_map(person, height, width)
        silhouette = parts > 0
        if any((v & ~silhouette).sum() < MIN_VISIBLE_FRACTION * a for v, a in zip(visible, areas)):
            continue
        visible = [v & ~silhouette for v in visible] + [silhouette]
        areas.append(int(silhouette.sum()))
        persons.append(person)
        part_maps.append(parts)
    scene = compose(background, persons, part_maps)
    # sensor noise, uniform in [-4, 4] (integer draws: a third of the cost of normal ones)
    noise = rng.integers(-4, 5, scene.image.shape, dtype=np.int16)
    scene.image = np.clip(scene.image + noise, 0, 255).astype(np.uint8)
    return scene


def render_bodies_image(
    seed: int, index: int, height: int, width: int
) -> Tuple[np.ndarray, List[dict]]:
    """Image ``index`` of the synthetic bodies set ``seed``: a pure function of (seed, index).

    Returns:
        image: (H, W, 3) uint8 RGB.
        annotations: one COCO keypoint annotation per person (bottom to top) with ``bbox``
            [x, y, w, h] (tight box of the drawn silhouette), ``keypoints`` (51 floats: x, y, v
            of the 17 COCO keypoints, COCO pixel-centred x, y = D2 coordinates - 0.5),
            ``num_keypoints``, ``area`` (silhouette pixels), ``head_size`` (PCKh normaliser),
            ``iscrowd`` 0, ``category_id`` 1.
    """
    for name, value in (("seed", seed), ("index", index)):
        if int(value) != value or value < 0:
            raise ValueError(f"render_bodies_image: {name} must be an integer >= 0, got {value!r}")
    for name, value in (("height", height), ("width", width)):
        if int(value) != value or value < MIN_IMAGE_SIZE:
            raise ValueError(
                f"render_bodies_image: {name} must be an integer >= {MIN_IMAGE_SIZE}, got {value!r}"
            )
    rng = np.random.default_rng([int(seed), int(index)])
    scene = render_bodies(rng, int(height), int(width))
    return scene.image, scene.annotations
