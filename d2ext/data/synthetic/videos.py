"""Synthetic videos for video instance segmentation and optical flow, with exact dense flow.

A video (a pure function of ``(seed, index)``) is a stack of planar layers in a fixed z-order:
a textured background plane moved by a camera motion (pan, roll, zoom), then 1 to
``max_objects`` shapes (the thing categories of ``categories.py``, outlined by
``render.shape_polygon``), each with its own similarity motion. Layer ``L`` maps its texture
coordinates ``u`` to the image point ``A_t(u) = c_t + s_t R(theta_t) u`` at frame ``t``: the
centre ``c_t`` follows a straight path bent by a constant acceleration (speeds from a fraction
of a pixel to ~20 px per frame; some objects enter the frame from outside, some leave it, some
cross it), ``theta_t`` spins at a constant rate and ``s_t`` grows or shrinks exponentially
(x0.64 to x1.55 over 12 frames). Textures are smooth functions of ``u`` (solid, stripes,
waves, gradient), so a surface point keeps its colour while it moves; frames have no noise.

Exact flow: the pixel ``p`` (its centre, ``(x + 0.5, y + 0.5)``) of frame ``t`` shows the top
layer whose polygon covers it (pycocotools rasterization, the same as the masks). That surface
point is at ``A_{t+1}(A_t^{-1}(p)) = c_{t+1} + (s_{t+1} / s_t) R(theta_{t+1} - theta_t)
(p - c_t)`` in frame ``t + 1``, and the flow is that minus ``p``: the forward flow of the
visible surface, defined also where the point leaves the image or becomes hidden (as
FlyingChairs and Sintel define it). Warping frame ``t + 1`` back with it reproduces frame ``t``
wherever the surface is visible in both, up to interpolation.

Ground truth per object and frame: its visible mask, None where none of it is visible (not yet
entered, left, or fully occluded). Every 6th video (``index % 6 == 4``) has all its objects
enter from outside, so its first frame shows none. Objects never visible are not written.

Files (:func:`write_synthetic_videos`)::

    instances.json                  YouTube-VIS json (uncompressed RLE, as the official files)
    JPEGImages/<video>/<frame>.jpg  frames; <video> = 0000, 0001, ..., <frame> = 00000, ...
    Flow/<video>/<frame>.npy        float32 (H, W, 2) flow of the frame to the next, pixels, x y
"""

import math
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

from ..youtube_vis import write_youtube_vis_json, youtube_vis_annotation
from .categories import THING_CATEGORIES, coco_categories
from .render import rasterize, shape_polygon

__all__ = [
    "LayerMotion",
    "SyntheticVideo",
    "Texture",
    "VideoObject",
    "render_video",
    "write_synthetic_videos",
]

MIN_OBJECT_SIZE = 14.0  # px: smallest shape diameter at scale 1
MAX_OBJECT_SIZE = 0.42  # of the shorter image side
_PLANS = ("enter", "leave", "cross", "stay")
_PLAN_PROBS = (0.25, 0.25, 0.1, 0.4)


@dataclass
class Texture:
    """Colour ``a (1 - w) + b w`` of texture coordinates ``(u, v)``; ``w`` is the mean of
    ``0.5 + 0.5 sin(kx u + ky v + phase)`` over the rows of ``waves`` (K, 3) when K > 0, else
    ``clip(gx u + gy v + offset, 0, 1)`` with ``ramp = (gx, gy, offset)``, else 0 (solid)."""

    color_a: np.ndarray
    color_b: np.ndarray
    waves: np.ndarray
    ramp: Optional[Tuple[float, float, float]] = None

    def __call__(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """(N, 3) float32 RGB at the (N,) texture coordinates."""
        if len(self.waves):
            kx, ky, phase = (self.waves[:, i, None] for i in range(3))
            w = (0.5 + 0.5 * np.sin(kx * u + ky * v + phase)).mean(0)
        elif self.ramp is not None:
            gx, gy, offset = self.ramp
            w = np.clip(gx * u + gy * v + offset, 0.0, 1.0)
        else:
            w = np.zeros_like(u)
        w = w[:, None].astype(np.float32)
        return self.color_a * (1 - w) + self.color_b * w


def _waves(rng: np.random.Generator, count: int, period_range: Tuple[float, float]) -> np.ndarray:
    period = np.exp(rng.uniform(*np.log(period_range), count))
    angle = rng.uniform(0, np.pi, count)
    k = 2 * np.pi / period
    return np.stack([k * np.cos(angle), k * np.sin(angle), rng.uniform(0, 2 * np.pi, count)], 1)


def _object_texture(rng: np.random.Generator, size: float) -> Texture:
    """Solid, stripes, waves or gradient over a shape of diameter ``size`` (periods >= 8 units,
    >= 5 px at the smallest scale, so bilinear warping stays accurate)."""
    a, b = rng.integers(0, 256, (2, 3)).astype(np.float32)
    kind = ("solid", "stripes", "waves", "gradient")[rng.integers(4)]
    if kind == "solid":
        return Texture(a, b, np.zeros((0, 3)))
    if kind == "gradient":
        angle = rng.uniform(0, 2 * np.pi)
        g = np.array([np.cos(angle), np.sin(angle)]) / size
        return Texture(a, b, np.zeros((0, 3)), (float(g[0]), float(g[1]), 0.5))
    return Texture(a, b, _waves(rng, 1 if kind == "stripes" else 2, (8.0, 20.0)))


def _background_texture(rng: np.random.Generator) -> Texture:
    a = rng.integers(40, 216, 3).astype(np.float32)
    b = np.clip(a + rng.normal(0, 60, 3), 0, 255).astype(np.float32)
    return Texture(a, b, _waves(rng, 3, (12.0, 48.0)))


@dataclass
class LayerMotion:
    """``A_t(u) = centers[t] + scales[t] R(angles[t]) u``: centers (T, 2) xy, angles (T,) in
    radians (counter-clockwise in xy, i.e. clockwise on screen), scales (T,)."""

    centers: np.ndarray
    angles: np.ndarray
    scales: np.ndarray

    def to_texture(self, t: int, x: np.ndarray, y: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Texture coordinates ``A_t^{-1}`` of image points (x, y)."""
        c, s = math.cos(self.angles[t]), math.sin(self.angles[t])
        dx, dy = x - self.centers[t, 0], y - self.centers[t, 1]
        return (c * dx + s * dy) / self.scales[t], (-s * dx + c * dy) / self.scales[t]

    def to_image(self, t: int, u: np.ndarray, v: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Image points ``A_t`` of texture coordinates (u, v)."""
        c, s = math.cos(self.angles[t]), math.sin(self.angles[t])
        x = self.centers[t, 0] + self.scales[t] * (c * u - s * v)
        return x, self.centers[t, 1] + self.scales[t] * (s * u + c * v)

    def next_position(self, t: int, x: np.ndarray, y: np.ndarray):
        """Where the surface point at image point (x, y) in frame t is in frame t + 1."""
        return self.to_image(t + 1, *self.to_texture(t, x, y))


@dataclass
class VideoObject:
    """A shape: ``category_id`` (dataset id), ``polygon`` (N, 2) xy in texture coordinates,
    ``plan`` its path: "enter" / "leave" (from / to outside the frame), "cross" (outside to
    outside, through the frame) or "stay" (inside at the start)."""

    category_id: int
    polygon: np.ndarray
    texture: Texture
    motion: LayerMotion
    plan: str

    def polygon_at(self, t: int) -> np.ndarray:
        return np.stack(self.motion.to_image(t, self.polygon[:, 0], self.polygon[:, 1]), 1)


@dataclass
class SyntheticVideo:
    """frames: (T, H, W, 3) uint8 RGB. instance_maps: (T, H, W) int32, 0 = background, k =
    ``objects[k - 1]`` visible. flows: (T - 1, H, W, 2) float32, frame t -> t + 1, x then y.
    full_areas: (K, T) int64 pixels of each object's polygon inside the frame, occluded or not."""

    frames: np.ndarray
    instance_maps: np.ndarray
    flows: np.ndarray
    objects: List[VideoObject]
    background: LayerMotion
    full_areas: np.ndarray


def _outside_point(rng, height, width, radius, side=None) -> Tuple[np.ndarray, int]:
    """A centre ``radius`` px beyond a random (or the given) side of the frame: 0 left, 1
    right, 2 top, 3 bottom."""
    side = int(rng.integers(4)) if side is None else side
    along = rng.uniform(0.1, 0.9) * (height if side < 2 else width)
    if side < 2:
        return np.array([-radius if side == 0 else width + radius, along]), side
    return np.array([along, -radius if side == 2 else height + radius]), side


def _object_motion(rng, plan, size, t, height, width) -> LayerMotion:
    """The motion sampled at the frame times ``t`` (T,)."""
    scales = np.exp(rng.uniform(-0.04, 0.04) * t)
    angles = rng.uniform(-0.12, 0.12) * t
    radius = size / 2 * scales.max() + 1

    def inside():
        return rng.uniform(0.1, 0.9, 2) * (width, height)

    if plan == "enter":
        start, end = _outside_point(rng, height, width, radius)[0], inside()
    elif plan == "leave":
        start, end = inside(), _outside_point(rng, height, width, radius)[0]
    elif plan == "cross":
        start, side = _outside_point(rng, height, width, radius)
        end = _outside_point(rng, height, width, radius, side ^ 1)[0]
    else:
        length = math.exp(rng.uniform(0.0, math.log(0.5 * width)))
        angle = rng.uniform(0, 2 * np.pi)
        start = inside()
        end = start + length * np.array([math.cos(angle), math.sin(angle)])
    tau = t / (t[-1] if len(t) > 1 else 1.0)  # 0 -> 1 from the first frame to the last
    accel = rng.normal(0, 0.15, 2)  # px / frame^2; keeps both endpoints
    centers = start + (end - start) * tau[:, None] + 0.5 * accel * (t * (t - t[-1]))[:, None]
    return LayerMotion(centers, angles, scales)


def _make_objects(rng, t, height, width, max_objects, all_enter) -> List[VideoObject]:
    objects = []
    max_size = max(MIN_OBJECT_SIZE + 1, MAX_OBJECT_SIZE * min(height, width))
    for _ in range(int(rng.integers(1, max_objects + 1))):
        cat = THING_CATEGORIES[rng.integers(len(THING_CATEGORIES))]
        size = float(np.exp(rng.uniform(np.log(MIN_OBJECT_SIZE), np.log(max_size))))
        plan = "enter" if all_enter else str(rng.choice(_PLANS, p=_PLAN_PROBS))
        polygon = shape_polygon(cat["name"], 0.0, 0.0, size, rng)
        texture = _object_texture(rng, size)
        motion = _object_motion(rng, plan, size, t, height, width)
        objects.append(VideoObject(cat["id"], polygon, texture, motion, plan))
    return objects


def _background_motion(rng, t, height, width) -> LayerMotion:
    angle = rng.uniform(0, 2 * np.pi)
    velocity = rng.uniform(0, 4) * np.array([math.cos(angle), math.sin(angle)])
    centers = np.array([width / 2, height / 2]) + velocity * t[:, None]
    return LayerMotion(
        centers, rng.uniform(-0.015, 0.015) * t, np.exp(rng.uniform(-0.02, 0.02) * t)
    )


def _in_frame(polygon: np.ndarray, height: int, width: int) -> bool:
    lo, hi = polygon.min(0), polygon.max(0)
    return bool(hi[0] > 0 and hi[1] > 0 and lo[0] < width and lo[1] < height)


def render_video(
    seed: int,
    index: int,
    num_frames: int,
    height: int,
    width: int,
    max_objects: int,
    frame_step: float = 1.0,
) -> SyntheticVideo:
    """Video ``index`` of a split of ``seed`` (module doc); ``max_objects`` >= 1 shapes.
    Frame ``t`` is taken at time ``t * frame_step`` of the motions (rates in the module doc are
    per unit of time): ``frame_step < 1`` samples the same kind of video more densely (objects
    still travel their whole path between the first and the last frame)."""
    rng = np.random.default_rng([int(seed), int(index)])
    times = np.arange(num_frames, dtype=np.float64) * frame_step
    background = _background_motion(rng, times, height, width)
    bg_texture = _background_texture(rng)
    objects = _make_objects(rng, times, height, width, max_objects, index % 6 == 4)
    layers = [background] + [o.motion for o in objects]
    px, py = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    inst = np.zeros((num_frames, height, width), np.int32)
    full_areas = np.zeros((len(objects), num_frames), np.int64)
    for t in range(num_frames):
        image = bg_texture(*(a.ravel() for a in background.to_texture(t, px, py)))
        image = image.reshape(height, width, 3)
        for k, obj in enumerate(objects, start=1):
            polygon = obj.polygon_at(t)
            if not _in_frame(polygon, height, width):
                continue
            mask = rasterize([polygon], height, width)
            image[mask] = obj.texture(*obj.motion.to_texture(t, px[mask], py[mask]))
            inst[t][mask] = k
            full_areas[k - 1, t] = mask.sum()
        frames[t] = np.clip(image, 0, 255).round().astype(np.uint8)
    flows = np.empty((max(num_frames - 1, 0), height, width, 2), np.float32)
    for t in range(num_frames - 1):
        for k, motion in enumerate(layers):
            sel = inst[t] == k
            x1, y1 = motion.next_position(t, px[sel], py[sel])
            flows[t][sel] = np.stack([x1 - px[sel], y1 - py[sel]], 1)
    return SyntheticVideo(frames, inst, flows, objects, background, full_areas)


def write_synthetic_videos(
    out_dir: str,
    num_videos: int,
    num_frames: int,
    image_size: Tuple[int, int],
    seed: int,
    max_objects: int,
    info: Optional[Dict] = None,
) -> Dict[str, int]:
    """Write ``num_videos`` videos (:func:`render_video`) into the existing folder ``out_dir``
    (module doc); returns counts of frames ("images") and object tracks ("instances")."""
    height, width = image_size
    videos, annotations = [], []
    for i in range(num_videos):
        video = render_video(seed, i, num_frames, height, width, max_objects)
        folder = f"{i:04d}"
        for sub in ("JPEGImages", "Flow"):
            os.makedirs(os.path.join(out_dir, sub, folder))
        names = [f"{folder}/{t:05d}.jpg" for t in range(num_frames)]
        for t, name in enumerate(names):
            path = os.path.join(out_dir, "JPEGImages", name)
            Image.fromarray(video.frames[t]).save(path, quality=92)
            if t + 1 < num_frames:
                np.save(os.path.join(out_dir, "Flow", name[:-4] + ".npy"), video.flows[t])
        videos.append(
            {
                "id": i + 1,
                "width": width,
                "height": height,
                "length": num_frames,
                "file_names": names,
            }
        )
        for k, obj in enumerate(video.objects, start=1):
            masks = list(video.instance_maps == k)
            if any(m.any() for m in masks):
                annotations.append(
                    youtube_vis_annotation(len(annotations) + 1, i + 1, obj.category_id, masks)
                )
    write_youtube_vis_json(
        os.path.join(out_dir, "instances.json"),
        videos,
        annotations,
        coco_categories(include_stuff=False),
        info or {"description": "d2ext synthetic videos"},
    )
    return {"images": num_videos * num_frames, "instances": len(annotations)}
