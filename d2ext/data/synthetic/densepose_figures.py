"""Synthetic articulated figures with DensePose ground truth (parts and analytic UV charts),
written as a DensePose-COCO json (``d2ext.data.densepose_coco``).

A figure is a 2-D body of capsules (a segment with a radius: torso, upper / lower arms and legs,
hands, feet) and a head disc, posed by a lean and random limb angles, facing the camera or away
from it. Each primitive is one of DensePose's 24 fine parts, whose left / right and front /
back labels follow the facing, so that the parts pair up under a mirror exactly as DensePose's
(``POINT_LABEL_SYMMETRIES``): torso 2 (front) / 1 (back); upper arm left 17 / 15, right 18 / 16;
lower arm left 21 / 19, right 22 / 20; upper leg right 9 / 7, left 10 / 8; lower leg right
13 / 11, left 14 / 12; hands right 3, left 4; feet left 5, right 6; head right half 23, left 24.
Coarse parts (``dp_masks``) are DensePose's 14 (:data:`FINE_TO_COARSE`).

Charts (continuous coordinates: pixel (i, j) covers [j, j+1) x [i, i+1)): on a capsule from
``a`` (proximal) to ``b`` with unit axis ``d`` and radius ``r``, ``U`` = the projection of the
point on the axis, ``(p - a) . d / |b - a|`` clamped to [0, 1] (0 at the proximal joint), and
``V = 0.5 + 0.5 c cross(d, p - a) / r`` across it (``c`` = +1 facing the camera, -1 away; V
rotates with the part). The head's axis points from the chin up, U = 0 at the chin, 1 at the
crown; its halves split V at the midline (right half from its edge, 0, to the midline, 1; left
half from the midline, 0, to its edge, 1). A mirror image changes the sign of a 2-D cross
product and keeps the facing, so every part maps to its mirror part with U kept and V reversed:
the table :func:`d2ext.data.densepose_flip.synthetic_uv_symmetry`.

A scene holds 1-4 figures (later ones in front), any of them partly outside the image; a new
figure may hide at most half of an earlier one's visible pixels. Per figure: ``bbox`` and
polygon ``segmentation`` of its visible pixels; with at least :data:`MIN_DENSEPOSE_AREA`
visible pixels, ``dp_masks`` (the coarse parts of the visible pixels, sampled at the centres of
a 256 x 256 grid over the box) and up to :data:`POINTS_PER_PERSON` points at uniformly random
positions inside random visible pixels, labelled with the exact part / U / V at that position
(points whose position another figure covers are dropped); smaller figures have no DensePose
keys (as DensePose-COCO's unannotated people).
"""

import colorsys
import json
import os
from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image

from .annotations import mask_bbox, mask_to_polygons, mask_to_rle
from .bodies import _background

__all__ = [
    "FINE_TO_COARSE",
    "Figure",
    "figure_labels",
    "render_densepose_image",
    "render_densepose_scene",
    "sample_figure",
    "scene_labels",
    "write_densepose_figures",
]

# fine part 0..24 -> coarse dp_masks part 0..14 (DensePose's grouping)
FINE_TO_COARSE = np.array([0, 1, 1, 2, 3, 4, 5, 6, 7, 6, 7, 8, 9, 8, 9, 10, 11, 10, 11, 12, 13, 12, 13, 14, 14])  # fmt: skip
# (limb, side) -> (part facing the camera, part facing away)
_LIMB_PARTS = {
    ("upper_arm", "left"): (17, 15), ("upper_arm", "right"): (18, 16),
    ("lower_arm", "left"): (21, 19), ("lower_arm", "right"): (22, 20),
    ("upper_leg", "left"): (10, 8), ("upper_leg", "right"): (9, 7),
    ("lower_leg", "left"): (14, 12), ("lower_leg", "right"): (13, 11),
    ("hand", "left"): (4, 4), ("hand", "right"): (3, 3),
    ("foot", "left"): (5, 5), ("foot", "right"): (6, 6),
}  # fmt: skip
HEAD_RIGHT, HEAD_LEFT = 23, 24
POINTS_PER_PERSON = 100
MIN_DENSEPOSE_AREA = 120  # visible pixels of a figure that gets DensePose annotations
MIN_INSIDE_FRACTION = 0.3  # of a sampled figure's pixels that must fall inside the image
MIN_VISIBLE_FRACTION = 0.5  # of an earlier figure's visible pixels a new one must leave
DP_SIZE = 256


@dataclass(frozen=True)
class Figure:
    """capsules: (K, 5) float64 rows (ax, ay, bx, by, radius), painted in order;
    parts: (K,) int64 fine part of each capsule; head: (cx, cy, radius, upx, upy);
    facing: +1 facing the camera, -1 away; palette: (25, 3) uint8 RGB per fine part."""

    capsules: np.ndarray
    parts: np.ndarray
    head: Tuple[float, float, float, float, float]
    facing: int
    palette: np.ndarray


def sample_figure(rng: np.random.Generator, height: int, width: int) -> Figure:
    """A random figure: height log-uniform in [0.35, 0.9] x the shorter side, lean within
    +-0.35 rad, mid-torso anywhere in the image."""
    tall = float(np.exp(rng.uniform(np.log(0.35), np.log(0.9)))) * min(height, width)
    facing = 1 if rng.random() < 0.5 else -1
    lean = rng.uniform(-0.35, 0.35)
    up = np.array([np.sin(lean), -np.cos(lean)])
    down = -up
    to_left = facing * np.array([np.cos(lean), np.sin(lean)])  # towards the person's left
    center = rng.uniform([0.0, 0.0], [float(width), float(height)])
    pelvis, neck = center - 0.15 * tall * up, center + 0.15 * tall * up
    rows, parts = [], []

    def capsule(a, b, radius, part):
        rows.append([a[0], a[1], b[0], b[1], radius * tall])
        parts.append(part)

    def limb(root, side, angle, bend, lengths, radii, kinds, extremity):
        s = to_left if side == "left" else -to_left  # away from the midline
        a1 = rng.uniform(*angle)
        a2 = a1 + rng.uniform(*bend)
        d1 = np.cos(a1) * down + np.sin(a1) * s
        d2 = np.cos(a2) * down + np.sin(a2) * s
        mid = root + lengths[0] * tall * rng.uniform(0.8, 1.0) * d1
        end = mid + lengths[1] * tall * rng.uniform(0.8, 1.0) * d2
        k = 0 if facing > 0 else 1
        capsule(root, mid, radii[0], _LIMB_PARTS[(kinds[0], side)][k])
        capsule(mid, end, radii[1], _LIMB_PARTS[(kinds[1], side)][k])
        d3 = d2 if kinds[1] == "lower_arm" else np.cos(a2 + 1.2) * down + np.sin(a2 + 1.2) * s
        capsule(end, end + extremity * tall * d3, radii[2], _LIMB_PARTS[(kinds[2], side)][k])

    sides = ("left", "right") if rng.random() < 0.5 else ("right", "left")
    for side in sides:
        hip = pelvis + (0.06 * tall) * (to_left if side == "left" else -to_left)
        limb(hip, side, (-0.1, 0.5), (-0.5, 0.3), (0.24, 0.23), (0.05, 0.04, 0.025),
             ("upper_leg", "lower_leg", "foot"), 0.05)  # fmt: skip
    capsule(pelvis, neck, 0.1, 2 if facing > 0 else 1)
    for side in sides:
        shoulder = neck - 0.02 * tall * up + 0.1 * tall * (to_left if side == "left" else -to_left)
        limb(shoulder, side, (-0.3, 2.6), (-2.0, 0.3), (0.17, 0.15), (0.036, 0.03, 0.03),
             ("upper_arm", "lower_arm", "hand"), 0.045)  # fmt: skip
    r_head = 0.07 * tall * rng.uniform(0.9, 1.1)
    tilt = rng.uniform(-0.3, 0.3)
    head_up = np.cos(tilt) * up + np.sin(tilt) * np.array([np.cos(lean), np.sin(lean)])
    head_c = neck + (0.02 * tall + r_head) * head_up
    return Figure(
        capsules=np.asarray(rows, np.float64),
        parts=np.asarray(parts, np.int64),
        head=(
            float(head_c[0]),
            float(head_c[1]),
            float(r_head),
            float(head_up[0]),
            float(head_up[1]),
        ),
        facing=facing,
        palette=_palette(rng, facing),
    )


def _palette(rng: np.random.Generator, facing: int) -> np.ndarray:
    """Warm hues on the person's left parts, cool on the right, a random torso, skin (facing the
    camera) or hair (away) on the head; upper segments brighter than lower ones."""
    pal = np.zeros((25, 3), np.float64)
    left, right = rng.uniform(0.0, 0.12), rng.uniform(0.5, 0.68)

    def rgb(h, s, v):
        return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v)) * 255

    for (kind, side), pair in _LIMB_PARTS.items():
        hue = left if side == "left" else right
        value = {"upper_arm": 1.0, "lower_arm": 0.7, "hand": 0.5}.get(kind, None)
        value = (
            value if value is not None else {"upper_leg": 0.9, "lower_leg": 0.6, "foot": 0.4}[kind]
        )
        dh = 0.06 if kind in ("upper_leg", "lower_leg", "foot") else 0.0
        for part in pair:
            pal[part] = rgb(hue + dh, 0.8, value)
    pal[1] = pal[2] = rgb(rng.uniform(0, 1), rng.uniform(0.1, 0.5), rng.uniform(0.4, 0.9))
    head = (0.07, 0.45, 0.85) if facing > 0 else (0.08, 0.6, 0.25)
    pal[HEAD_LEFT] = pal[HEAD_RIGHT] = rgb(*head)
    return np.clip(pal, 0, 255).astype(np.uint8)


def _bounds(fig: Figure) -> Tuple[np.ndarray, np.ndarray]:
    """(x, y) corners of the figure's bounding box."""
    cx, cy, r = fig.head[:3]
    caps = fig.capsules
    pad = caps[:, 4:5]
    lo = np.minimum(np.min(caps[:, [0, 1]] - pad, 0), np.min(caps[:, [2, 3]] - pad, 0))
    hi = np.maximum(np.max(caps[:, [0, 1]] + pad, 0), np.max(caps[:, [2, 3]] + pad, 0))
    return np.minimum(lo, [cx - r, cy - r]), np.maximum(hi, [cx + r, cy + r])


def figure_labels(fig: Figure, x: np.ndarray, y: np.ndarray):
    """Fine part (0 = not on the figure), U and V of the figure at points (x, y) (any shape,
    continuous coordinates); the head is painted last, then the capsules in reverse order."""
    part = np.zeros(x.shape, np.int64)
    u = np.zeros(x.shape, np.float64)
    v = np.zeros(x.shape, np.float64)
    lo, hi = _bounds(fig)
    near = (x >= lo[0]) & (x <= hi[0]) & (y >= lo[1]) & (y <= hi[1])
    if near.any():
        part[near], u[near], v[near] = _labels_near(fig, x[near], y[near])
    return part, u, v


def _labels_near(fig: Figure, x: np.ndarray, y: np.ndarray):
    part = np.zeros(x.shape, np.int64)
    u = np.zeros(x.shape, np.float64)
    v = np.zeros(x.shape, np.float64)
    cx, cy, r, ux, uy = fig.head
    dx, dy = x - cx, y - cy
    on = dx * dx + dy * dy <= r * r
    w = np.clip(fig.facing * (ux * dy - uy * dx) / r, -1.0, 1.0)  # +1 at the person's left edge
    part[on] = np.where(w[on] > 0, HEAD_LEFT, HEAD_RIGHT)
    u[on] = np.clip((dx[on] * ux + dy[on] * uy) / r, -1.0, 1.0) * 0.5 + 0.5
    v[on] = np.where(w[on] > 0, w[on], 1.0 + w[on])
    for (ax, ay, bx, by, rad), p in zip(fig.capsules[::-1], fig.parts[::-1]):
        free = np.flatnonzero(part == 0)
        px, py = x[free] - ax, y[free] - ay
        lx, ly = bx - ax, by - ay
        length = max(np.hypot(lx, ly), 1e-9)
        t = np.clip((px * lx + py * ly) / length**2, 0.0, 1.0)
        hit = (px - t * lx) ** 2 + (py - t * ly) ** 2 <= rad * rad
        idx = free[hit]
        part[idx] = p
        u[idx] = t[hit]
        cross = (lx * py[hit] - ly * px[hit]) / length
        v[idx] = 0.5 + 0.5 * np.clip(fig.facing * cross / rad, -1.0, 1.0)
    return part, u, v


def scene_labels(figures: List[Figure], x: np.ndarray, y: np.ndarray):
    """(figure index + 1, 0 = none), part, U, V of the front-most figure at points (x, y)."""
    who = np.zeros(x.shape, np.int64)
    part = np.zeros(x.shape, np.int64)
    u = np.zeros(x.shape, np.float64)
    v = np.zeros(x.shape, np.float64)
    for k, fig in enumerate(figures, start=1):
        p, uu, vv = figure_labels(fig, x, y)
        on = p > 0
        who[on], part[on], u[on], v[on] = k, p[on], uu[on], vv[on]
    return who, part, u, v


def _pixel_centres(height: int, width: int):
    yy, xx = np.mgrid[:height, :width].astype(np.float64)
    return xx + 0.5, yy + 0.5


def _full_area(fig: Figure) -> int:
    """Pixels of the whole figure on an unbounded pixel grid (inside the image or not)."""
    lo, hi = _bounds(fig)
    yy, xx = np.mgrid[np.floor(lo[1]) : np.ceil(hi[1]), np.floor(lo[0]) : np.ceil(hi[0])] + 0.5
    return int((figure_labels(fig, xx, yy)[0] > 0).sum())


def _densepose_keys(rng, figures, who, part, k: int, box: List[int]) -> Dict:
    """dp_masks and up to POINTS_PER_PERSON points of figure ``k`` (1-based) in ``box``."""
    height, width = who.shape
    x0, y0, w, h = box
    grid = (np.arange(DP_SIZE) + 0.5) / DP_SIZE
    cols = np.minimum((x0 + grid * w).astype(np.int64), width - 1)
    rows = np.minimum((y0 + grid * h).astype(np.int64), height - 1)
    coarse = np.where(who[np.ix_(rows, cols)] == k, FINE_TO_COARSE[part[np.ix_(rows, cols)]], 0)
    masks = [mask_to_rle(coarse == c) if (coarse == c).any() else [] for c in range(1, 15)]
    pix = np.flatnonzero(who.reshape(-1) == k)
    pick = rng.choice(pix, size=min(POINTS_PER_PERSON, len(pix)), replace=False)
    px = pick % width + rng.random(len(pick))
    py = pick // width + rng.random(len(pick))
    w_at, p_at, u_at, v_at = scene_labels(figures, px, py)
    keep = w_at == k
    return {
        "dp_x": ((px[keep] - x0) * DP_SIZE / w).tolist(),
        "dp_y": ((py[keep] - y0) * DP_SIZE / h).tolist(),
        "dp_I": p_at[keep].astype(float).tolist(),
        "dp_U": u_at[keep].tolist(),
        "dp_V": v_at[keep].tolist(),
        "dp_masks": masks,
    }


def render_densepose_image(
    seed: int, index: int, height: int, width: int, max_persons: int = 4
) -> Tuple[np.ndarray, List[Dict]]:
    """Image ``index`` of set ``seed`` (a pure function of both): (H, W, 3) uint8 RGB and one
    DensePose-COCO annotation (without ids) per visible figure, back to front."""
    image, annotations, _ = render_densepose_scene(seed, index, height, width, max_persons)
    return image, [{k: v for k, v in a.items() if k != "figure"} for a in annotations]


def render_densepose_scene(
    seed: int, index: int, height: int, width: int, max_persons: int = 4
) -> Tuple[np.ndarray, List[Dict], List[Figure]]:
    """:func:`render_densepose_image` plus the figures, back to front; annotation ``j`` has
    ``"figure"``: its index in that list (not written to the json)."""
    rng = np.random.default_rng([int(seed), int(index)])
    image = _background(rng, height, width)
    xx, yy = _pixel_centres(height, width)
    num = int(rng.integers(1, max_persons + 1))
    figures: List[Figure] = []
    visible: List[np.ndarray] = []
    attempts = 0
    while len(figures) < num and attempts < 20 * num:
        attempts += 1
        fig = sample_figure(rng, height, width)
        mask = figure_labels(fig, xx, yy)[0] > 0
        if not mask.any() or mask.sum() < MIN_INSIDE_FRACTION * _full_area(fig):
            continue
        if any((m & ~mask).sum() < MIN_VISIBLE_FRACTION * m.sum() for m in visible):
            continue
        visible = [m & ~mask for m in visible] + [mask]
        figures.append(fig)
    who, part, u, v = scene_labels(figures, xx, yy)
    on = who > 0
    palette = np.stack([f.palette for f in figures]) if figures else np.zeros((1, 25, 3), np.uint8)
    # cylinder-like shading across each part, darker towards the distal end
    shade = (0.7 + 0.3 * np.sin(np.pi * v[on])) * (1.0 - 0.2 * u[on])
    image[on] = np.clip(palette[who[on] - 1, part[on]] * shade[:, None], 0, 255).astype(np.uint8)
    for k, fig in enumerate(figures, start=1):  # eyes of the figures facing the camera
        if fig.facing > 0:
            cx, cy, r, ux, uy = fig.head
            for s in (-1, 1):
                ex, ey = cx + 0.3 * r * ux + s * 0.4 * r * -uy, cy + 0.3 * r * uy + s * 0.4 * r * ux
                eye = ((xx - ex) ** 2 + (yy - ey) ** 2 <= (0.13 * r) ** 2) & (who == k)
                image[eye] = (30, 30, 40)
    noise = rng.integers(-4, 5, image.shape, dtype=np.int16)
    image = np.clip(image + noise, 0, 255).astype(np.uint8)
    annotations = []
    for k in range(1, len(figures) + 1):
        mask = who == k
        if not mask.any():
            continue
        box = mask_bbox(mask)
        ann = {
            "category_id": 1,
            "iscrowd": 0,
            "bbox": [float(b) for b in box],
            "area": float(mask.sum()),
            "segmentation": mask_to_polygons(mask),
        }
        if mask.sum() >= MIN_DENSEPOSE_AREA:
            ann.update(_densepose_keys(rng, figures, who, part, k, box))
        annotations.append(ann)
    for ann, k in zip(annotations, [k for k in range(len(figures)) if (who == k + 1).any()]):
        ann["figure"] = k
    return image, annotations, figures


def write_densepose_figures(
    out_dir: str, num_images: int, image_size: Tuple[int, int], seed: int, max_persons: int = 4
) -> Dict[str, int]:
    """``images/000000.png ...`` + ``densepose.json`` (DensePose-COCO) in ``out_dir``."""
    os.makedirs(os.path.join(out_dir, "images"))
    height, width = image_size
    images, annotations = [], []
    for i in range(num_images):
        image, anns = render_densepose_image(seed, i, height, width, max_persons)
        record = {"id": i + 1, "file_name": f"{i:06d}.png", "height": height, "width": width}
        Image.fromarray(image).save(os.path.join(out_dir, "images", record["file_name"]))
        images.append(record)
        for ann in anns:
            annotations.append({"id": len(annotations) + 1, "image_id": record["id"], **ann})
    person = {"id": 1, "name": "person", "supercategory": "person"}
    with open(os.path.join(out_dir, "densepose.json"), "w") as f:
        json.dump(
            {
                "info": {"description": "d2ext synthetic DensePose figures"},
                "images": images,
                "annotations": annotations,
                "categories": [person],
            },
            f,
        )
    return {"images": len(images), "instances": len(annotations)}
