"""Synthetic WIDER FACE-like scenes: many faces per image with the five RetinaFace landmarks,
written as a RetinaFace ``label.txt`` + images + the official ``.mat`` keep-lists.

A scene is one of four kinds (its WIDER-style "event" folder): ``0--Crowd`` (6 to ``max_faces``
faces of 8-40 px), ``1--Group`` (2-6 faces of 20 px to 40% of the image side), ``2--Portrait``
(1-2 faces of 30-85% of the side) and ``3--Background`` (no face, 8% of the images). Sizes are
box heights, log-uniform: the 8 px to "most of the image" range of WIDER scaled to the image.
Faces are drawn by the 68-landmark renderer (:func:`faces.render_face`, each on its own canvas
pasted by its feature map over a cluttered background), far (small) ones first, so larger faces
occlude smaller ones; centres may lie anywhere in the image (faces partly outside it). A
placement is redrawn (up to 20 times) when less than 60% of its box is inside the image or when
it and an earlier face cover more than half of either's box.

Per face:

* box: integer ``x y w h`` of the head from the hairline to the chin, clipped to the image;
* five landmarks from the face's geometry (``canonical_landmarks``): the image-left and
  image-right eye centres (mean of each eye's six points), the nose tip (point 31), the
  image-left and image-right mouth corners (points 49 and 55), on OpenCV's 1/16-pixel grid.
  Not labelled (``-1`` in ``label.txt``) for boxes under 12 px high and 15% of the others; the
  flag written after each point is 1.0 where the pixel under it does not show the face (an
  occluder, another face, outside the image), else 0.0;
* blur (WIDER's 0 clear / 1 normal / 2 heavy: a Gaussian of sigma 4% / 10% of the face size
  over the face, blended in by its equally blurred outline; the ``label.txt`` blur value) and
  occlusion (0 / 1 / 2: under 5% / under 40% / more of its pixels inside the image hidden by
  its occluder or by nearer faces), both also in the ``.mat`` attribute lists.

Keep-lists (official semantics: a face outside a subset is neither positive nor false positive
for it), nested as the official ones: with the effective size ``sqrt(w h)`` x 1 / 0.75 / 0.5 for
blur and occlusion 0 / 1 / 2, easy = effective size >= 40 px, medium >= 16 px, hard = every face
with ``sqrt(w h)`` >= 8 px.
"""

import math
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from PIL import Image

from ..wider_face import format_label_face
from ..wider_face_mat import write_wider_gt_mats
from .faces import (
    FEATURE_ID,
    FacePose,
    FaceShape,
    _background,
    canonical_landmarks,
    project,
    render_face,
)

__all__ = ["SceneFace", "FaceSceneImage", "render_face_scene", "subset_keep", "write_face_scenes"]

EVENTS = ("0--Crowd", "1--Group", "2--Portrait", "3--Background")
# event -> (probability, min faces, max faces or None = max_faces, box height range, where a
# float is a fraction of the image side and an int is pixels)
_KINDS = {
    "0--Crowd": (0.3, 6, None, (8, 40)),
    "1--Group": (0.4, 2, 6, (20, 0.4)),
    "2--Portrait": (0.22, 1, 2, (0.3, 0.85)),
    "3--Background": (0.08, 0, 0, (8, 8)),
}
MIN_LANDMARK_FACE = 12  # px: smaller faces are written without landmarks
EASY_SIZE, MEDIUM_SIZE, HARD_SIZE = 40.0, 16.0, 8.0  # px of effective size (module doc)
_DIFFICULTY_FACTOR = (1.0, 0.75, 0.5)  # effective size factor of blur / occlusion 0, 1, 2
_OCCLUDER = FEATURE_ID["occluder"]


@dataclass
class SceneFace:
    """box: (x, y, w, h) integers clipped to the image. landmarks: (5, 2) D2 coordinates in
    the contract's order, or None (not labelled). flags: (5,) 1.0 where the point is hidden."""

    box: Tuple[int, int, int, int]
    landmarks: Optional[np.ndarray]
    flags: np.ndarray
    blur: int
    occlusion: int


@dataclass
class FaceSceneImage:
    """image: (H, W, 3) uint8 RGB; event: its folder (:data:`EVENTS`); faces in label order."""

    image: np.ndarray
    event: str
    faces: List[SceneFace]


def five_landmarks(shape: FaceShape) -> np.ndarray:
    """(5, 3) canonical (x, y, depth) of the five RetinaFace points of ``shape``: image-left
    eye centre (the subject's right eye, iBUG 37-42), image-right eye centre (43-48), nose tip
    (31), image-left and image-right mouth corners (49, 55)."""
    c = canonical_landmarks(shape)
    return np.stack([c[36:42].mean(0), c[42:48].mean(0), c[30], c[48], c[54]])


def _head_box(shape: FaceShape, pose: FacePose) -> np.ndarray:
    """XYXY float box of the head outline from the hairline down (the part WIDER boxes)."""
    t = np.linspace(0, 2 * np.pi, 181)
    pts = np.stack([np.cos(t), shape.head_b * np.sin(t), 0 * t], 1)
    pts = pts[pts[:, 1] >= shape.hairline]
    half = math.sqrt(max(0.0, 1 - (shape.hairline / shape.head_b) ** 2))
    pts = np.concatenate([pts, [[-half, shape.hairline, 0], [half, shape.hairline, 0]]])
    xy = project(pts, pose)
    return np.concatenate([xy.min(0), xy.max(0)])


def _size_px(value, side: int) -> float:
    return float(value) * side if isinstance(value, float) else float(value)


def _sample_faces(rng, height: int, width: int, max_faces: int):
    """(event, [(shape, pose, box XYXY float)]) of one scene, far (small) faces first."""
    probs = np.array([k[0] for k in _KINDS.values()])
    event = EVENTS[int(rng.choice(len(EVENTS), p=probs / probs.sum()))]
    _, lo, hi, (size_lo, size_hi) = _KINDS[event]
    hi = max_faces if hi is None else min(hi, max_faces)
    count = int(rng.integers(min(lo, hi), hi + 1))
    side = min(height, width)
    log_lo, log_hi = math.log(_size_px(size_lo, side)), math.log(_size_px(size_hi, side))
    faces, boxes = [], []
    for _ in range(count):
        for _trial in range(20):
            shape = FaceShape.sample(rng)
            box_h = math.exp(rng.uniform(log_lo, log_hi))
            pose = FacePose(
                yaw=float(np.deg2rad(rng.uniform(-25, 25))),
                roll=float(np.deg2rad(rng.uniform(-25, 25))),
                scale=box_h / (shape.head_b - shape.hairline),
                center=(float(rng.uniform(0, width)), float(rng.uniform(0, height))),
            )
            box = _head_box(shape, pose)
            clipped = np.clip(box, 0, [width, height, width, height])
            area = np.prod(box[2:] - box[:2])
            if np.prod(clipped[2:] - clipped[:2]) < 0.6 * area:
                continue  # mostly outside the image
            if any(_covered(box, other) > 0.5 or _covered(other, box) > 0.5 for other in boxes):
                continue
            faces.append((shape, pose, box))
            boxes.append(box)
            break
    faces.sort(key=lambda f: f[1].scale)
    return event, faces


def _covered(box: np.ndarray, by: np.ndarray) -> float:
    """Fraction of XYXY ``box`` covered by ``by``."""
    wh = np.clip(np.minimum(box[2:], by[2:]) - np.maximum(box[:2], by[:2]), 0, None)
    return float(np.prod(wh) / max(np.prod(box[2:] - box[:2]), 1e-9))


def _integer_box(box: np.ndarray, height: int, width: int) -> Tuple[int, int, int, int]:
    x0, y0 = (max(0, math.floor(v)) for v in box[:2])
    x1, y1 = min(width, math.ceil(box[2])), min(height, math.ceil(box[3]))
    return x0, y0, x1 - x0, y1 - y0


def render_face_scene(
    seed: int, index: int, height: int, width: int, max_faces: int = 15
) -> FaceSceneImage:
    """Image ``index`` of a face-scenes set (a pure function of the arguments; module doc)."""
    rng = np.random.default_rng([int(seed), int(index)])
    event, sampled = _sample_faces(rng, height, width, max_faces)
    scene = _background(rng, height, width)
    owner = np.zeros((height, width), np.int32)  # 1 + index of the face each pixel shows
    feature = np.zeros((height, width), np.uint8)  # which of its features
    own_pixels, blurs, extras = [], [], []
    for j, (shape, pose, box) in enumerate(sampled):
        radius = shape.head_b * pose.scale * 1.2 + 2
        ox, oy = (math.floor(c - radius) for c in pose.center)
        side = 2 * math.ceil(radius)
        local = FacePose(
            pose.yaw, pose.roll, pose.scale, (pose.center[0] - ox, pose.center[1] - oy)
        )
        face = render_face(rng, side, side, shape=shape, pose=local, occlusion=rng.random() < 0.3)
        # the part of the canvas inside the image
        sx0, sy0 = max(0, -ox), max(0, -oy)
        sx1, sy1 = min(side, width - ox), min(side, height - oy)
        win = (slice(oy + sy0, oy + sy1), slice(ox + sx0, ox + sx1))
        fmap = face.feature_map[sy0:sy1, sx0:sx1]
        mask = fmap > 0
        pixels = face.image[sy0:sy1, sx0:sx1].astype(np.float32)
        blur = int(rng.choice(3, p=[0.6, 0.25, 0.15]))
        if blur:
            # defocus: the face and its outline blurred together, blended in by a soft mask
            sigma = max(0.6, (0.04, 0.1)[blur - 1] * math.sqrt(np.prod(box[2:] - box[:2])))
            alpha = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigma)[..., None]
            pixels = cv2.GaussianBlur(pixels, (0, 0), sigma)
            scene[win] = scene[win] * (1 - alpha) + pixels * alpha
        else:
            scene[win][mask] = pixels[mask]
        owner[win][mask] = j + 1
        feature[win][mask] = fmap[mask]
        own_pixels.append(int(((fmap > 0) & (fmap != _OCCLUDER)).sum()))
        blurs.append(blur)
        extras.append(rng.random() < 0.15)  # landmarks withheld regardless of size

    # mild sensor noise over the whole scene
    scene = scene + rng.normal(0, rng.uniform(0, 4), scene.shape)
    image = np.clip(scene, 0, 255).round().astype(np.uint8)

    faces = []
    for j, (shape, pose, box) in enumerate(sampled):
        visible = int(((owner == j + 1) & (feature != _OCCLUDER)).sum())
        hidden = 1 - visible / max(own_pixels[j], 1)
        occlusion = 0 if hidden < 0.05 else 1 if hidden < 0.4 else 2
        xywh = _integer_box(box, height, width)
        xy = project(five_landmarks(shape), pose)
        col, row = np.floor(xy).astype(int).T
        inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
        shown = np.zeros(len(xy), bool)
        shown[inside] = (owner[row[inside], col[inside]] == j + 1) & (
            feature[row[inside], col[inside]] != _OCCLUDER
        )
        labelled = xywh[3] >= MIN_LANDMARK_FACE and not extras[j]
        faces.append(
            SceneFace(xywh, xy if labelled else None, (~shown).astype(float), blurs[j], occlusion)
        )
    return FaceSceneImage(image, event, faces)


def subset_keep(faces: Sequence[SceneFace]) -> Dict[str, np.ndarray]:
    """The 0-based easy / medium / hard keep-lists of an image's faces (module doc)."""
    keep: Dict[str, List[int]] = {"easy": [], "medium": [], "hard": []}
    for i, f in enumerate(faces):
        size = math.sqrt(f.box[2] * f.box[3])
        effective = size * _DIFFICULTY_FACTOR[f.blur] * _DIFFICULTY_FACTOR[f.occlusion]
        for subset, ok in (
            ("easy", effective >= EASY_SIZE),
            ("medium", effective >= MEDIUM_SIZE),
            ("hard", size >= HARD_SIZE),
        ):
            if ok:
                keep[subset].append(i)
    return {k: np.asarray(v, dtype=np.int64) for k, v in keep.items()}


def write_face_scenes(
    out_dir: str, num_images: int, image_size: Tuple[int, int], seed: int, max_faces: int
) -> Dict[str, int]:
    """Write ``images/<event>/<index>.jpg`` (JPEG quality 95), ``label.txt`` and the four
    official ``.mat`` files in ``gt/`` into ``out_dir``; returns counts."""
    lines, gt_images, num_faces = [], [], 0
    for i in range(num_images):
        scene = render_face_scene(seed, i, *image_size, max_faces=max_faces)
        name = f"{i:06d}"
        os.makedirs(os.path.join(out_dir, "images", scene.event), exist_ok=True)
        path = os.path.join(out_dir, "images", scene.event, name + ".jpg")
        Image.fromarray(scene.image).save(path, quality=95)
        lines.append(f"# {scene.event}/{name}.jpg")
        lines += [format_label_face(f.box, f.landmarks, f.flags, f.blur) for f in scene.faces]
        gt_images.append(
            {
                "event": scene.event,
                "file": name,
                "boxes": np.asarray([f.box for f in scene.faces], np.float64).reshape(-1, 4),
                "keep": subset_keep(scene.faces),
                "blur": np.asarray([f.blur for f in scene.faces], np.int64),
                "occlusion": np.asarray([f.occlusion for f in scene.faces], np.int64),
            }
        )
        num_faces += len(scene.faces)
    with open(os.path.join(out_dir, "label.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    write_wider_gt_mats(os.path.join(out_dir, "gt"), gt_images)
    return {"images": num_images, "instances": num_faces}
