"""Rendering of one synthetic scene: textured shapes ("things") painted in z-order over a
textured background or over "stuff" regions (sky / ground / water).

Coordinates: pixel ``(y, x)`` covers the continuous square ``[x, x+1) x [y, y+1)``, the convention
of pycocotools' polygon rasterization, which is what draws every shape here. Later objects
occlude earlier ones; an object's ground truth is its *visible* mask. A placement is rejected
when it would leave an earlier non-crowd object with a hole, a sliver (< ``MIN_PART_AREA``
pixels) or almost nothing visible (< ``MIN_AREA``), so every non-crowd visible mask is exactly
representable by COCO polygons (see ``annotations.mask_to_polygons``).
"""

from dataclasses import dataclass
from typing import List, Optional, Tuple

import cv2
import numpy as np
import pycocotools.mask as mask_util

from .categories import STUFF_CATEGORIES, THING_CATEGORIES

MIN_AREA = 20  # pixels: smallest visible area of any object
MIN_PART_AREA = 6  # pixels: smallest connected piece of a non-crowd visible mask
MIN_SIZE = 8.0  # pixels: smallest shape diameter; the largest is half the shorter image side
_SKY, _GROUND, _WATER = (c["id"] for c in STUFF_CATEGORIES)


@dataclass
class SceneObject:
    """A thing of a scene; ``category_id`` is the *dataset* id (``THING_CATEGORIES``)."""

    category_id: int
    iscrowd: int


@dataclass
class Scene:
    """
    image: (H, W, 3) uint8 RGB.
    instance_map: (H, W) int32; 0 where no thing is visible, ``k`` where ``objects[k-1]`` is.
    objects: the things, bottom to top.
    stuff_map: (H, W) int32 stuff dataset category id under the things, or None (no stuff).
    """

    image: np.ndarray
    instance_map: np.ndarray
    objects: List[SceneObject]
    stuff_map: Optional[np.ndarray] = None


def shape_polygon(kind: str, cx: float, cy: float, size: float, rng: np.random.Generator):
    """Vertices (N, 2) as (x, y) of a ``kind`` shape of diameter ``size`` centred at (cx, cy)."""
    r = size / 2.0
    theta = rng.uniform(0, 2 * np.pi)
    if kind in ("disc", "ellipse"):
        n = int(np.clip(size, 16, 64))
        t = np.linspace(0, 2 * np.pi, n, endpoint=False)
        ry = r if kind == "disc" else r * rng.uniform(0.35, 0.7)
        pts = np.stack([r * np.cos(t), ry * np.sin(t)], axis=1)
    elif kind == "rectangle":
        hh = r * rng.uniform(0.35, 1.0)
        pts = np.array([[-r, -hh], [r, -hh], [r, hh], [-r, hh]])
    elif kind == "triangle":
        t = np.sort(rng.uniform(0, 2 * np.pi, 3))
        t = t + np.array([0.0, 0.5, 1.0]) * max(0.0, 1.2 - (t[1] - t[0]))  # avoid slivers
        pts = np.stack([r * np.cos(t), r * np.sin(t)], axis=1)
    elif kind == "star":
        t = np.linspace(0, 2 * np.pi, 10, endpoint=False)
        radius = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
        pts = np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)
    elif kind == "hexagon":
        t = np.linspace(0, 2 * np.pi, 6, endpoint=False)
        pts = np.stack([r * np.cos(t), r * np.sin(t)], axis=1)
    else:
        raise ValueError(f"unknown shape kind {kind!r}")
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    return pts @ rot.T + np.array([cx, cy])


def rasterize(polygons: List[np.ndarray], height: int, width: int) -> np.ndarray:
    """(H, W) bool mask of the union of (N, 2) xy polygons, as pycocotools rasterizes them."""
    rles = mask_util.frPyObjects([p.reshape(-1).tolist() for p in polygons], height, width)
    return mask_util.decode(mask_util.merge(rles)).astype(bool)


def _is_clean(mask: np.ndarray, crowd: bool) -> bool:
    """Whether a visible mask is big enough and (non-crowd) has no hole and no sliver."""
    if mask.sum() < MIN_AREA:
        return False
    if crowd:
        return True
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    crop = np.pad(mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1], 1).astype(np.uint8)
    _, _, stats, _ = cv2.connectedComponentsWithStats(crop, connectivity=8)
    if stats[1:, cv2.CC_STAT_AREA].min() < MIN_PART_AREA:
        return False
    _, hierarchy = cv2.findContours(crop, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    return bool((hierarchy[0][:, 3] == -1).all())


def _random_color(rng, low=0, high=256) -> np.ndarray:
    return rng.integers(low, high, 3).astype(np.float32)


def texture(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, color=None, kind=None):
    """(..., 3) float32 RGB texture over pixel coordinates ``yy, xx`` (same shape): solid,
    stripes, noise or gradient around ``color`` (random if None)."""
    color = _random_color(rng) if color is None else np.asarray(color, np.float32)
    kind = kind or ("solid", "stripes", "noise", "gradient")[rng.integers(4)]
    shape = yy.shape + (3,)
    if kind == "solid":
        return np.broadcast_to(color, shape).astype(np.float32)
    if kind == "noise":
        return color + rng.normal(0, rng.uniform(10, 35), shape).astype(np.float32)
    other = _random_color(rng)
    a = rng.uniform(0, np.pi)
    proj = (xx * np.cos(a) + yy * np.sin(a))[..., None].astype(np.float32)
    if kind == "stripes":
        period = rng.uniform(3, 12)
        w = 0.5 + 0.5 * np.sin(proj * (2 * np.pi / period) + rng.uniform(0, 2 * np.pi))
    elif kind == "gradient":
        w = (proj - proj.min()) / max(float(np.ptp(proj)), 1.0)
    else:
        raise ValueError(f"unknown texture kind {kind!r}")
    return color * (1 - w) + other * w


def _stuff_layout(rng, yy, xx, height, width) -> np.ndarray:
    """(H, W) int32 stuff id map: sky above a wavy horizon, ground below, maybe a water pond."""
    horizon = height * rng.uniform(0.2, 0.55) + height * rng.uniform(0.02, 0.08) * np.sin(
        xx * (2 * np.pi / (width * rng.uniform(0.4, 1.2))) + rng.uniform(0, 2 * np.pi)
    )
    stuff = np.where(yy < horizon, _SKY, _GROUND).astype(np.int32)
    if rng.random() < 0.75:
        cy = rng.uniform(horizon.mean() + 0.1 * height, height)
        cx = rng.uniform(0.2, 0.8) * width
        ay, ax = height * rng.uniform(0.1, 0.25), width * rng.uniform(0.2, 0.45)
        pond = ((yy - cy) / ay) ** 2 + ((xx - cx) / ax) ** 2 < 1
        stuff[pond & (stuff == _GROUND)] = _WATER
    return stuff


def _stuff_background(rng, stuff, yy, xx) -> np.ndarray:
    """(H, W, 3) float32 image of the stuff regions, each with its characteristic texture."""
    jitter = lambda c: np.clip(np.asarray(c, np.float32) + rng.normal(0, 15, 3), 0, 255)  # noqa
    sky = texture(rng, yy, xx, jitter([70, 130, 220]), "gradient")
    ground = texture(rng, yy, xx, jitter([120, 90, 50]), "noise")
    water = texture(rng, yy, xx, jitter([20, 90, 150]), "stripes")
    return np.where(
        (stuff == _SKY)[..., None], sky, np.where((stuff == _WATER)[..., None], water, ground)
    )


def _random_shape_mask(rng, kind, size, height, width, center=None) -> np.ndarray:
    cx, cy = center if center is not None else (rng.uniform(0, width), rng.uniform(0, height))
    return rasterize([shape_polygon(kind, cx, cy, size, rng)], height, width)


def _crowd_mask(rng, kind, height, width) -> np.ndarray:
    """A crowd: a cluster of 4-8 small same-kind shapes (may touch and overlap)."""
    cx, cy = rng.uniform(0.2, 0.8) * width, rng.uniform(0.2, 0.8) * height
    spread = min(height, width) * rng.uniform(0.08, 0.18)
    mask = np.zeros((height, width), bool)
    for _ in range(rng.integers(4, 9)):
        c = (cx + rng.normal(0, spread), cy + rng.normal(0, spread))
        mask |= _random_shape_mask(rng, kind, rng.uniform(6, 14), height, width, center=c)
    return mask


def render_scene(
    rng: np.random.Generator,
    height: int,
    width: int,
    *,
    num_objects: int,
    with_crowd: bool,
    with_stuff: bool,
) -> Scene:
    """Compose and paint a scene with up to ``num_objects`` non-crowd things (fewer when
    placements keep being rejected), one crowd region first if ``with_crowd``, over stuff
    regions if ``with_stuff`` else over a random textured/gradient background."""
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    stuff = _stuff_layout(rng, yy, xx, height, width) if with_stuff else None
    inst = np.zeros((height, width), np.int32)
    objects: List[SceneObject] = []
    kinds = [c["name"] for c in THING_CATEGORIES]

    def place(mask: np.ndarray, cat: dict, iscrowd: int) -> bool:
        for j in np.unique(inst[mask]):
            if j > 0 and not _is_clean((inst == j) & ~mask, objects[j - 1].iscrowd == 1):
                return False
        if mask.sum() < MIN_AREA:
            return False
        inst[mask] = len(objects) + 1
        objects.append(SceneObject(category_id=cat["id"], iscrowd=iscrowd))
        return True

    if with_crowd:
        cat = THING_CATEGORIES[rng.integers(len(kinds))]
        place(_crowd_mask(rng, cat["name"], height, width), cat, 1)
    max_size = max(MIN_SIZE + 1, min(height, width) / 2.0)
    num_things, attempts = 0, 0
    while num_things < num_objects and attempts < 6 * num_objects:
        attempts += 1
        cat = THING_CATEGORIES[rng.integers(len(kinds))]
        size = float(np.exp(rng.uniform(np.log(MIN_SIZE), np.log(max_size))))
        num_things += place(_random_shape_mask(rng, cat["name"], size, height, width), cat, 0)

    if with_stuff:
        image = _stuff_background(rng, stuff, yy, xx)
    else:
        image = texture(
            rng,
            yy,
            xx,
            _random_color(rng, 40, 216),
            ("stripes", "noise", "gradient")[rng.integers(3)],
        )
    for k in range(1, len(objects) + 1):
        visible = inst == k
        rows, cols = np.flatnonzero(visible.any(1)), np.flatnonzero(visible.any(0))
        box: Tuple[slice, slice] = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        tex = texture(rng, yy[box], xx[box])
        image[box][visible[box]] = tex[visible[box]]
    image = image + rng.normal(0, 4, image.shape).astype(np.float32)  # sensor noise
    return Scene(np.clip(image, 0, 255).round().astype(np.uint8), inst, objects, stuff)
