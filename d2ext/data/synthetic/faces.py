"""Synthetic faces annotated with the 68 iBUG landmarks (``keypoint_metadata``), one per image.

A face is a set of curves in a canonical frame (head-centred units, x to the image right for a
frontal face, y down; the head is an ellipse of half-axes 1 x ``head_b``): the head outline,
brows, nose bridge and bottom, eye outlines, outer and inner lip. Every landmark is a *vertex* of
the curve it belongs to, in iBUG order (jaw along the lower head outline from the subject's
right ear, which is on the image left, etc.), and the curves are drawn through those vertices,
so each landmark lies on its drawn feature: the pixel under a visible landmark always shows it
(``feature_map`` says which feature every pixel shows; :data:`LANDMARK_FEATURE` which feature
each landmark is on).

Pose: a yaw-like turn moves each feature sideways by its depth (``x cos(yaw) + z sin(yaw)``,
the nose most, the head outline not at all), then roll, scale and translation. Painting is by
numbers: curves are rasterised into ``feature_map`` (later features over earlier ones, an
occluder last), then every feature gets its colour over a cluttered background, and global
lighting (gain, bias, a linear gradient, noise) is applied.

Coordinates: D2 continuous image coordinates (pixel (i, j) covers ``[j, j+1) x [i, i+1)``).
Landmarks are quantised to OpenCV's 1/16-pixel drawing grid, so they are exactly the drawn
vertices and survive a ``.pts`` round trip (``x + 0.5`` has at most 4 decimals) bit-exactly.
Visibility: 0 outside the image; 1 where the pixel under the point does not show the point's
own feature (the occluder covers it; in faces smaller than ~20 px per head unit a neighbouring
feature can too); 2 otherwise.
"""

from dataclasses import dataclass, replace
from typing import Dict, Optional, Sequence, Tuple

import cv2
import numpy as np

from .render import rasterize, shape_polygon, texture

NUM_LANDMARKS = 68
_SHIFT = 4  # OpenCV fixed-point bits: curves are drawn at 1/16-pixel precision
_PAD = 16  # pixels of margin around the canvas the feature map is drawn on
# feature ids of ``feature_map`` (0 = background), in painting order
FEATURES = tuple(
    "skin hair head_outline nose eye_white iris eye_outline brow lips mouth_inside outer_lip "
    "inner_lip occluder".split()
)
FEATURE_ID = {name: i + 1 for i, name in enumerate(FEATURES)}
# (feature, 1-based first, last landmark) of the iBUG groups
_GROUPS = (
    ("head_outline", 1, 17),
    ("brow", 18, 27),
    ("nose", 28, 36),
    ("eye_outline", 37, 48),
    ("outer_lip", 49, 60),
    ("inner_lip", 61, 68),
)
LANDMARK_FEATURE = np.zeros(NUM_LANDMARKS, np.uint8)
for _feature, _first, _last in _GROUPS:
    LANDMARK_FEATURE[_first - 1 : _last] = FEATURE_ID[_feature]
# depth of each feature in head units (its sideways shift under yaw); the outline is the
# silhouette and does not move
_DEPTH = {"brow": 0.6, "eye": 0.6, "mouth": 0.6}


@dataclass(frozen=True)
class FaceShape:
    """Canonical face geometry (head units; every feature mirror-symmetric about x = 0)."""

    head_b: float = 1.25  # vertical half-axis of the head ellipse (horizontal is 1)
    hairline: float = -0.8  # hair above this y
    eye_x: float = 0.4  # eye centres at (+-eye_x, eye_y)
    eye_y: float = -0.25
    eye_w: float = 0.18  # eye half-width, half-height (upper lid)
    eye_h: float = 0.085
    brow_outer: float = 0.6  # brow x from the outer to the inner end
    brow_inner: float = 0.14
    brow_y: float = -0.5  # brow end height and arch
    brow_arch: float = 0.07
    nose_top: float = -0.24
    nose_tip: float = 0.16
    nose_w: float = 0.17  # half-width of the nose bottom
    mouth_y: float = 0.6
    mouth_w: float = 0.37  # mouth half-width (outer corners)
    upper_lip: float = 0.15  # outer lip heights above / below mouth_y
    lower_lip: float = 0.18
    mouth_open: float = 0.05  # inner lip opening
    gaze: Tuple[float, float] = (0.0, 0.0)  # iris offset, fraction of the eye size

    @staticmethod
    def sample(rng: np.random.Generator) -> "FaceShape":
        u = rng.uniform
        return FaceShape(
            head_b=u(1.15, 1.3),
            hairline=u(-0.95, -0.78),
            eye_x=u(0.36, 0.44),
            eye_y=u(-0.3, -0.2),
            eye_w=u(0.16, 0.2),
            eye_h=u(0.07, 0.1),
            brow_outer=u(0.56, 0.62),
            brow_inner=u(0.12, 0.17),
            brow_y=u(-0.55, -0.47),
            brow_arch=u(0.04, 0.1),
            nose_top=u(-0.27, -0.2),
            nose_tip=u(0.12, 0.2),
            nose_w=u(0.15, 0.2),
            mouth_y=u(0.56, 0.64),
            mouth_w=u(0.32, 0.42),
            upper_lip=u(0.13, 0.17),
            lower_lip=u(0.15, 0.2),
            mouth_open=0.0 if rng.random() < 0.3 else u(0.0, 0.12),
            gaze=(u(-0.3, 0.3), u(-0.2, 0.2)),
        )


@dataclass(frozen=True)
class FacePose:
    """Yaw (sideways turn) and roll in radians; ``scale`` pixels per head unit; ``center`` the
    head centre (x, y) in D2 image coordinates."""

    yaw: float
    roll: float
    scale: float
    center: Tuple[float, float]


@dataclass
class Curve:
    """A drawn polyline of ``feature``: ``xyz`` (N, 3) canonical points with depth;
    ``landmarks[k]`` is the 0-based iBUG index of vertex ``vertices[k]``."""

    feature: str
    xyz: np.ndarray
    closed: bool
    landmarks: Sequence[int] = ()
    vertices: Sequence[int] = ()


@dataclass
class FaceScene:
    """
    image: (H, W, 3) uint8 RGB.
    feature_map: (H, W) uint8 ``FEATURE_ID`` of what each pixel shows (0 = background).
    keypoints: (68, 3) float64 (x, y, v), D2 coordinates, iBUG order.
    shape, pose: the face's geometry and placement.
    """

    image: np.ndarray
    feature_map: np.ndarray
    keypoints: np.ndarray
    shape: FaceShape
    pose: FacePose


def _with_depth(xy: np.ndarray, z) -> np.ndarray:
    return np.concatenate([xy, np.broadcast_to(np.asarray(z, float), (len(xy),))[:, None]], 1)


def _mirror(xyz: np.ndarray) -> np.ndarray:
    return xyz * np.array([-1.0, 1.0, 1.0])


def face_curves(shape: FaceShape) -> Dict[str, Curve]:
    """The canonical curves of ``shape``, with the landmark vertices of all 68 points."""
    s, curves = shape, {}
    # head: lower arc (jaw, 17 landmarks 4 vertices apart) from the right ear level over the
    # chin, then the upper arc back over the top of the head
    delta = np.arcsin(0.2 / s.head_b)
    t = np.concatenate(
        [np.linspace(np.pi + delta, -delta, 65), np.linspace(-delta, -np.pi + delta, 33)[1:-1]]
    )
    head = np.stack([np.cos(t), s.head_b * np.sin(t)], 1)
    curves["head"] = Curve("head_outline", _with_depth(head, 0.0), True, range(17), range(0, 65, 4))

    # right brow (image left) outer -> inner; the left one is its mirror, numbered inner -> outer
    b = np.linspace(0.0, 1.0, 17)
    brow = np.stack(
        [
            -s.brow_outer + (s.brow_outer - s.brow_inner) * b,
            s.brow_y - s.brow_arch * np.sin(np.pi * b),
        ],
        1,
    )
    brow = _with_depth(brow, _DEPTH["brow"])
    curves["brow_r"] = Curve("brow", brow, False, range(17, 22), range(0, 17, 4))
    curves["brow_l"] = Curve("brow", _mirror(brow), False, range(22, 27), range(16, -1, -4))

    # nose: bridge top -> tip, protruding more towards the tip; bottom right -> left
    b = np.linspace(0.0, 1.0, 4)
    bridge = np.stack([0 * b, s.nose_top + (s.nose_tip - s.nose_top) * b, 0.65 + 0.35 * b], 1)
    curves["bridge"] = Curve("nose", bridge, False, range(27, 31), range(4))
    u = np.linspace(-1.0, 1.0, 9)
    bottom_y = s.nose_tip + 0.08 - 0.05 * u**2
    bottom = np.stack([s.nose_w * u, bottom_y, 0.95 - 0.2 * u**2], 1)
    curves["nose_bottom"] = Curve("nose", bottom, False, range(31, 36), range(0, 9, 2))
    for side, end in (("r", bottom[0]), ("l", bottom[-1])):
        curves[f"nose_wing_{side}"] = Curve("nose", np.stack([bridge[-1], end]), False)

    # eyes: upper lid then lower lid, from the image-left corner; the same landmark vertices
    # serve both eyes (right: outer corner first; left: inner corner first)
    u = np.linspace(-1.0, 1.0, 13)
    upper = np.stack([s.eye_w * u, -s.eye_h * (1 - np.abs(u) ** 1.8)], 1)
    lower = np.stack([s.eye_w * u[::-1], 0.8 * s.eye_h * (1 - u[::-1] ** 2)], 1)[1:-1]
    eye = np.concatenate([upper, lower]) + np.array([0.0, s.eye_y])
    eye_vertices = (0, 4, 8, 12, 16, 20)  # lower lid vertex 12 + k is u[::-1][k]
    for side, sign, first in (("r", -1.0, 36), ("l", 1.0, 42)):
        xy = _with_depth(eye + np.array([sign * s.eye_x, 0.0]), _DEPTH["eye"])
        curves[f"eye_{side}"] = Curve(
            "eye_outline", xy, True, range(first, first + 6), eye_vertices
        )

    # lips: outer contour with a cupid's bow, inner contour between corners at 0.7 mouth_w
    u = np.linspace(-1.0, 1.0, 25)
    bow = 1 - 0.2 * np.exp(-((u / 0.18) ** 2))
    upper = np.stack([s.mouth_w * u, -s.upper_lip * (1 - np.abs(u) ** 1.6) * bow], 1)
    lower = np.stack([s.mouth_w * u[::-1], s.lower_lip * (1 - np.abs(u[::-1]) ** 1.6)], 1)[1:-1]
    outer = np.concatenate([upper, lower]) + np.array([0.0, s.mouth_y])
    outer = _with_depth(outer, _DEPTH["mouth"])
    # u = -1, -7/12, -1/4, 0, 1/4, 7/12, 1 on the upper lip, back on the lower (24 + k: u[::-1][k])
    vertices = (0, 5, 9, 12, 15, 19, 24, 29, 33, 36, 39, 43)
    curves["outer_lip"] = Curve("outer_lip", outer, True, range(48, 60), vertices)
    v = np.linspace(-1.0, 1.0, 9)
    ri = 0.7 * s.mouth_w
    upper = np.stack([ri * v, -0.25 * s.mouth_open * (1 - v**2)], 1)
    lower = np.stack([ri * v[::-1], 0.75 * s.mouth_open * (1 - v[::-1] ** 2)], 1)[1:-1]
    inner = np.concatenate([upper, lower]) + np.array([0.0, s.mouth_y])
    inner = _with_depth(inner, _DEPTH["mouth"])
    curves["inner_lip"] = Curve(
        "inner_lip", inner, True, range(60, 68), (0, 2, 4, 6, 8, 10, 12, 14)
    )
    return curves


def canonical_landmarks(shape: FaceShape) -> np.ndarray:
    """(68, 3) canonical (x, y, depth) of the landmarks of ``shape``, iBUG order."""
    out = np.full((NUM_LANDMARKS, 3), np.nan)
    for c in face_curves(shape).values():
        out[list(c.landmarks)] = c.xyz[list(c.vertices)]
    return out


def project(xyz: np.ndarray, pose: FacePose) -> np.ndarray:
    """(N, 2) D2 image coordinates of canonical points, on OpenCV's 1/16-pixel grid."""
    x = xyz[:, 0] * np.cos(pose.yaw) + xyz[:, 2] * np.sin(pose.yaw)
    c, s = np.cos(pose.roll), np.sin(pose.roll)
    xy = pose.scale * np.stack([c * x - s * xyz[:, 1], s * x + c * xyz[:, 1]], 1)
    xy = xy + np.asarray(pose.center)
    # OpenCV draws integer point k/16 at the centre of pixel k/16, i.e. D2 coordinate k/16 + 0.5
    return np.round((xy - 0.5) * (1 << _SHIFT)) / (1 << _SHIFT) + 0.5


def _fixed(xy: np.ndarray) -> np.ndarray:
    """int32 OpenCV fixed-point coordinates (``shift=_SHIFT``) of grid points ``xy``."""
    return np.round((xy - 0.5) * (1 << _SHIFT)).astype(np.int32)


def draw_feature_map(
    curves: Dict[str, Curve], pose: FacePose, shape: FaceShape, height: int, width: int
) -> np.ndarray:
    """(H, W) uint8 feature ids of the face (no occluder), later features over earlier ones."""
    # drawn with a margin: OpenCV clips a line leaving the canvas to rounded end points, which
    # can move the pixels of a vertex just inside it
    pad = _PAD
    pose = replace(pose, center=(pose.center[0] + pad, pose.center[1] + pad))
    height, width = height + 2 * pad, width + 2 * pad
    fmap = np.zeros((height, width), np.uint8)
    pts = {k: _fixed(project(c.xyz, pose)) for k, c in curves.items()}
    line = max(1, int(round(0.04 * pose.scale)))
    fid = FEATURE_ID

    def fill(key: str, feature: str, out=fmap):
        cv2.fillPoly(out, [pts[key]], fid[feature], cv2.LINE_8, _SHIFT)

    def stroke(key: str, thickness: int = line):
        c = curves[key]
        cv2.polylines(fmap, [pts[key]], c.closed, fid[c.feature], thickness, cv2.LINE_8, _SHIFT)

    fill("head", "skin")
    yy, xx = np.mgrid[:height, :width] + 0.5
    # hair where the canonical y (roll undone about the head centre) is above the hairline
    c, s = np.cos(pose.roll), np.sin(pose.roll)
    dx, dy = xx - pose.center[0], yy - pose.center[1]
    fmap[(fmap > 0) & ((-s * dx + c * dy) / pose.scale < shape.hairline)] = fid["hair"]
    stroke("head", max(1, int(round(0.05 * pose.scale))))
    for key in ("bridge", "nose_bottom", "nose_wing_r", "nose_wing_l"):
        stroke(key)
    for side, sign in (("r", -1.0), ("l", 1.0)):
        white, iris = np.zeros_like(fmap), np.zeros_like(fmap)
        fill(f"eye_{side}", "eye_white", white)
        gx, gy = shape.gaze
        center = [
            [sign * shape.eye_x + gx * shape.eye_w, shape.eye_y + gy * shape.eye_h, _DEPTH["eye"]]
        ]
        ctr = tuple(_fixed(project(np.array(center), pose))[0])
        radius = int(round(0.9 * shape.eye_h * pose.scale * (1 << _SHIFT)))
        cv2.circle(iris, ctr, radius, 1, -1, cv2.LINE_8, _SHIFT)
        fmap[white > 0] = fid["eye_white"]
        fmap[(white > 0) & (iris > 0)] = fid["iris"]
        stroke(f"eye_{side}")
    for side in ("r", "l"):
        stroke(f"brow_{side}", max(2, int(round(0.1 * pose.scale))))
    fill("outer_lip", "lips")
    fill("inner_lip", "mouth_inside")
    stroke("outer_lip")
    stroke("inner_lip")
    return fmap[pad:-pad, pad:-pad]


def sample_pose(rng: np.random.Generator, shape: FaceShape, height: int, width: int) -> FacePose:
    """Yaw within +-20 deg, roll within +-30 deg, head height 45-80% of the shorter image side,
    centred near the image centre; 15% of faces are placed off-centre and larger, so that
    part of them leaves the image."""
    side = min(height, width)
    cropped = rng.random() < 0.15
    fraction = rng.uniform(0.6, 0.95) if cropped else rng.uniform(0.45, 0.8)
    lo, hi = (0.1, 0.9) if cropped else (0.38, 0.62)
    return FacePose(
        yaw=float(np.deg2rad(rng.uniform(-20, 20))),
        roll=float(np.deg2rad(rng.uniform(-30, 30))),
        scale=float(fraction * side / (2 * shape.head_b)),
        center=(float(rng.uniform(lo, hi) * width), float(rng.uniform(lo, hi) * height)),
    )


def _occluder(rng: np.random.Generator, pose: FacePose, height: int, width: int) -> np.ndarray:
    """(H, W) bool mask of a random shape 0.6-1.5 head units across over part of the face."""
    center = np.asarray(pose.center) + rng.uniform(-0.8, 0.8, 2) * pose.scale
    kind = ("rectangle", "ellipse", "disc", "hexagon")[rng.integers(4)]
    size = rng.uniform(0.6, 1.5) * pose.scale
    return rasterize([shape_polygon(kind, *center, size, rng)], height, width)


def _palette(rng: np.random.Generator) -> np.ndarray:
    """(len(FEATURES) + 1, 3) float32 RGB colour per feature id (row 0 unused)."""
    pal = np.zeros((len(FEATURES) + 1, 3), np.float32)
    skin = np.array([rng.uniform(120, 245), 0, 0])
    skin[1] = skin[0] * rng.uniform(0.65, 0.85)
    skin[2] = skin[1] * rng.uniform(0.7, 0.9)
    hair = rng.uniform(15, 130) * np.array([1.0, rng.uniform(0.6, 0.9), rng.uniform(0.3, 0.7)])
    lips = skin * np.array([rng.uniform(0.85, 1.0), rng.uniform(0.45, 0.65), rng.uniform(0.5, 0.7)])
    colors = {
        "skin": skin,
        "hair": hair,
        "head_outline": skin * 0.55,
        "nose": skin * 0.6,
        "eye_white": rng.uniform(215, 245) * np.ones(3),
        "iris": rng.uniform(20, 110, 3),
        "eye_outline": rng.uniform(10, 50) * np.ones(3),
        "brow": hair * 0.7,
        "lips": lips,
        "mouth_inside": np.array([60.0, 15.0, 20.0]) * rng.uniform(0.6, 1.2),
        "outer_lip": lips * 0.55,
        "inner_lip": lips * 0.4,
    }
    for name, color in colors.items():
        pal[FEATURE_ID[name]] = color
    return pal


def _ramp(xx: np.ndarray, yy: np.ndarray, center, angle: float) -> np.ndarray:
    """Signed distance (pixels) from ``center`` along direction ``angle``."""
    return (xx - center[0]) * np.cos(angle) + (yy - center[1]) * np.sin(angle)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(H, W, 3) float32 textured background cluttered with 3-10 of the shapes' shapes."""
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    kind = ("stripes", "noise", "gradient")[rng.integers(3)]
    image = texture(rng, yy, xx, rng.uniform(30, 225, 3), kind)
    for _ in range(int(rng.integers(3, 11))):
        kind = ("disc", "ellipse", "rectangle", "triangle", "star", "hexagon")[rng.integers(6)]
        center = rng.uniform(0, width), rng.uniform(0, height)
        size = rng.uniform(0.1, 0.5) * min(height, width)
        image[rasterize([shape_polygon(kind, *center, size, rng)], height, width)] = rng.uniform(
            0, 255, 3
        )
    return image


def render_face(
    rng: np.random.Generator,
    height: int,
    width: int,
    *,
    shape: Optional[FaceShape] = None,
    pose: Optional[FacePose] = None,
    occlusion: Optional[bool] = None,
) -> FaceScene:
    """Render one face; ``shape``/``pose`` are sampled when None, ``occlusion`` (a random
    rectangle or ellipse over part of the face) happens with probability 0.3 when None."""
    shape = FaceShape.sample(rng) if shape is None else shape
    pose = sample_pose(rng, shape, height, width) if pose is None else pose
    occlusion = bool(rng.random() < 0.3) if occlusion is None else occlusion
    curves = face_curves(shape)
    fmap = draw_feature_map(curves, pose, shape, height, width)
    occluder = _occluder(rng, pose, height, width) if occlusion else None

    image = _background(rng, height, width)
    face = fmap > 0
    pal = _palette(rng)
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    # soft shading across the face, as if lit from one side
    shade = 1 + 0.15 * _ramp(xx, yy, pose.center, rng.uniform(0, 2 * np.pi)) / pose.scale
    image[face] = pal[fmap[face]] * shade[face, None]
    if occluder is not None:
        image[occluder] = texture(rng, yy, xx)[occluder]
        fmap[occluder] = FEATURE_ID["occluder"]

    # lighting: gain, bias, a linear gradient over the image, sensor noise
    ramp = _ramp(xx, yy, (width / 2, height / 2), rng.uniform(0, 2 * np.pi)) / max(height, width)
    gain = rng.uniform(0.6, 1.25) * (1 + rng.uniform(-0.35, 0.35) * ramp)
    image = image * gain[..., None] + rng.uniform(-35, 35)
    image = image + rng.normal(0, rng.uniform(0, 6), image.shape)
    image = np.clip(image, 0, 255).round().astype(np.uint8)

    xy = project(canonical_landmarks(shape), pose)
    inside = (xy[:, 0] >= 0) & (xy[:, 0] < width) & (xy[:, 1] >= 0) & (xy[:, 1] < height)
    # labelled but hidden where the pixel under the point shows anything but its own feature:
    # the occluder, or (only in tiny faces, < ~20 px per head unit) a neighbouring feature
    col, row = np.floor(xy[inside]).astype(int).T
    shows_own = np.zeros(NUM_LANDMARKS, bool)
    shows_own[inside] = fmap[row, col] == LANDMARK_FEATURE[inside]
    vis = np.where(inside, np.where(shows_own, 2.0, 1.0), 0.0)
    return FaceScene(image, fmap, np.concatenate([xy, vis[:, None]], 1), shape, pose)


def render_face_image(seed: int, index: int, height: int, width: int) -> FaceScene:
    """Image ``index`` of a synthetic faces set (a pure function of ``seed`` and ``index``)."""
    return render_face(np.random.default_rng([int(seed), int(index)]), height, width)
