"""Synthetic panoptic videos in the Cityscapes-VPS layout, with exact flow between frames.

A video is a :func:`videos.render_video` video (the same camera and moving shapes, sampled at
``FRAME_STEP``: its 30 raw frames span the motion of a 12-frame ``synth_videos`` clip) whose
background plane carries a panoptic world and whose bottom is hidden by a static bonnet:

* **stuff** (the categories of ``synth_panoptic``: sky, ground, water): sky above a wavy
  horizon, ground below it, in 3 videos of 4 a water pond in the ground. The regions are
  functions of the background plane's texture coordinates, so their boundaries move exactly
  with the camera (pan, roll, zoom); each class has its own smooth texture.
* **things**: the moving shapes, each one segment whose id stays the same over its video.
* **crowd**: in every 4th video (``index % 4 == 1``) a cluster of small ellipses of one thing
  category on the background plane, one segment with ``iscrowd: 1``.
* **VOID** (segment id 0): a static ego-vehicle bonnet along the bottom of every frame (it
  hides whatever passes behind it; zero flow) and 1-3 small unlabelled patches on the
  background plane.

Segment ids follow the Cityscapes-VPS files (panopticapi's ``IdGenerator``, made
deterministic): a stuff segment's id is its class colour ``R + 256 G + 256^2 B``; a thing's is
its class colour for the first object of that class in the video, else the colour jittered by
up to 30 per channel, distinct within the video, and fixed over the video.

Frames (the choice follows what consumes them): every video has ``NUM_RAW_FRAMES = 30`` raw
frames, of which raw frames 4, 9, ..., 29 (every 5th, ``FRAME_SPACING``) are annotated, as in
Cityscapes-VPS: 6 annotated frames per video is what the official VPQ evaluation and the
loader's ``frames_per_video`` require, the 5-frame spacing is what VPQ's k = 0/5/10/15 means,
VPSNet trains on pairs of neighbouring annotated frames (its reference is the annotated frame
5 raw frames before or after) and infers on all raw frames with the previous raw frame as the
reference. The 4 raw frames before the first annotated one give it a previous frame.

Files (:func:`write_synthetic_panoptic_videos`), the layout of mcahny/vps's
``data/cityscapes_vps`` (``<s>`` the split)::

    panoptic_gt_<s>_city_vps.json     images / annotations (segments_info: id, category_id,
                                      iscrowd, area) / categories: the annotated frames
    im_all_info_<s>_city_vps.json     images (int ids) / categories: every raw frame
    <s>/img/<image id>_newImg8bit.png     the annotated frames (the 4th of each video, the
                                          Cityscapes gtFine frame: ``_leftImg8bit.png``)
    <s>/panoptic_video/<image id>_final_mask.png   gt PNGs, id = R + 256 G + 256^2 B
                                          (the 4th: ``_gtFine_color.png``)
    <s>/img_all/synth_<seq>_<frame>_leftImg8bit.png   every raw frame
    <s>/flow/<image id>.npy           float32 (H, W, 2) flow, x then y in pixels, from the
                                      annotated frame to the next annotated one (not the last)
    <s>/flow_prev/<image id>.npy      the same to the previous annotated one (not the first)

Image ids are ``VVVV_FFFF_synth_<seq>_<frame>``: the video (from 0001), the annotated frame's
running index over the split (from 0001), the sequence (= the video) and the raw frame number
(6 digits each). The flow of frame ``t`` to frame ``t'`` at a pixel is where the surface seen
there at ``t`` is at ``t'``, minus the pixel, as ``videos.py`` defines it (also where that
point is hidden or outside at ``t'``), so warping frame ``t'`` back with it reproduces frame
``t`` wherever the surface is visible in both. Raw-frame flows are not written (they would
triple the dataset's size); :func:`exact_flow` gives the flow between any two raw frames. Not
written either (our loader does not read them): the original's instance jsons
(``panoptic_im_*``, ``instances_*_rle.json``) and ``labelmap/``.
"""

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from typing import Dict, Optional, Tuple

import numpy as np
from panopticapi.utils import id2rgb
from PIL import Image

from ..cityscapes_vps import FRAMES_PER_VIDEO, gt_png_name
from .categories import STUFF_CATEGORIES, THING_CATEGORIES, coco_categories
from .generate import DEFAULT_NUM_FRAMES, GENERATOR_VERSION, generate_atomically
from .videos import SyntheticVideo, Texture, _object_texture, _waves, render_video

__all__ = [
    "PanopticVideo",
    "PanopticVideoSpec",
    "WorldPlane",
    "exact_flow",
    "generate_panoptic_videos",
    "render_panoptic_video",
    "write_synthetic_panoptic_videos",
]

logger = logging.getLogger(__name__)

FRAME_SPACING = 5  # raw frames from one annotated frame to the next
LEADING_FRAMES = 4  # raw frames before the first annotated one (Cityscapes-VPS: 4, 9, ..., 29)
NUM_RAW_FRAMES = LEADING_FRAMES + FRAME_SPACING * (FRAMES_PER_VIDEO - 1) + 1
ANNOTATED_FRAMES = tuple(LEADING_FRAMES + FRAME_SPACING * j for j in range(FRAMES_PER_VIDEO))
GT_FINE_INDEX = 3  # the annotated frame named as Cityscapes' gtFine frame (raw frame 19 of 30)
FRAME_STEP = (DEFAULT_NUM_FRAMES - 1) / (NUM_RAW_FRAMES - 1)
CITY = "synth"
RENDERER_VERSION = 1  # bump when the bytes written change
VOID = 0
_SKY, _GROUND, _WATER = (c["id"] for c in STUFF_CATEGORIES)
_COLORS = {c["id"]: c["color"] for c in THING_CATEGORIES + STUFF_CATEGORIES}
_THING_IDS = {c["id"] for c in THING_CATEGORIES}


def _color_id(color) -> int:
    return int(color[0]) + 256 * int(color[1]) + 256 * 256 * int(color[2])


def _jitter(rng: np.random.Generator, color) -> np.ndarray:
    return np.clip(np.asarray(color, np.float32) + rng.normal(0, 15, 3), 0, 255).astype(np.float32)


def _in_ellipses(u: np.ndarray, v: np.ndarray, ellipses) -> np.ndarray:
    """Points inside any of the axis-aligned ellipses (centre u, v, semi-axes u, v)."""
    inside = np.zeros(np.shape(u), bool)
    for cu, cv, au, av in ellipses:
        inside |= ((u - cu) / au) ** 2 + ((v - cv) / av) ** 2 < 1
    return inside


@dataclass
class WorldPlane:
    """The background plane's content at its texture coordinates (u, v) (frame 0 shows
    ``u = x - W / 2``, ``v = y - H / 2``): sky where ``v < v0 + amplitude sin(k u + phase)``
    (``horizon``), ground elsewhere, water inside the ``pond`` ellipse within the ground, then
    the VOID ``patches`` and the ``crowd`` ellipses (of thing category ``crowd_category``) on
    top. Ellipses are rows (centre u, centre v, semi-axis u, semi-axis v)."""

    horizon: Tuple[float, float, float, float]
    pond: Optional[Tuple[float, float, float, float]]
    patches: np.ndarray
    crowd: np.ndarray
    crowd_category: int
    textures: Dict[int, Texture]  # per region (regions())

    def regions(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """The region of each point: a stuff category id, ``crowd_category`` or VOID (0)."""
        v0, amplitude, k, phase = self.horizon
        out = np.where(v < v0 + amplitude * np.sin(k * u + phase), _SKY, _GROUND)
        if self.pond is not None:
            out[(out == _GROUND) & _in_ellipses(u, v, [self.pond])] = _WATER
        out[_in_ellipses(u, v, self.patches)] = VOID
        out[_in_ellipses(u, v, self.crowd)] = self.crowd_category
        return out

    def colors(self, regions: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """(N, 3) float32 RGB of the (N,) points in their regions."""
        out = np.zeros((len(u), 3), np.float32)
        for region, texture in self.textures.items():
            sel = regions == region
            if sel.any():
                out[sel] = texture(u[sel], v[sel])
        return out


def _world_plane(rng: np.random.Generator, height: int, width: int, crowd: bool) -> WorldPlane:
    horizon = (
        height * rng.uniform(-0.3, 0.05),
        height * rng.uniform(0.02, 0.08),
        2 * np.pi / (width * rng.uniform(0.4, 1.2)),
        rng.uniform(0, 2 * np.pi),
    )
    pond = None
    if rng.random() < 0.75:
        cv = rng.uniform(horizon[0] + 0.15 * height, 0.45 * height)
        axes = (width * rng.uniform(0.1, 0.3), height * rng.uniform(0.08, 0.2))
        pond = (width * rng.uniform(-0.3, 0.3), cv, *axes)
    num_patches = int(rng.integers(1, 4))
    patches = np.column_stack(
        [
            rng.uniform(-0.45, 0.45, num_patches) * width,
            rng.uniform(-0.45, 0.45, num_patches) * height,
            rng.uniform(2.5, 6.0, (num_patches, 2)),
        ]
    )
    crowd_category = int(THING_CATEGORIES[rng.integers(len(THING_CATEGORIES))]["id"])
    blobs = np.zeros((0, 4))
    if crowd:
        count = int(rng.integers(4, 9))
        centre = (rng.uniform(-0.3, 0.3) * width, rng.uniform(0.0, 0.3) * height)
        spread = min(height, width) * rng.uniform(0.05, 0.1)
        offsets = rng.normal(0, spread, (count, 2))
        blobs = np.column_stack([centre + offsets, rng.uniform(3.0, 7.0, (count, 2))])
    textures = {
        _SKY: Texture(
            _jitter(rng, [70, 130, 220]),
            _jitter(rng, [170, 205, 240]),
            np.zeros((0, 3)),
            (0.0, 1.0 / height, 0.5),
        ),
        _GROUND: Texture(
            _jitter(rng, [120, 90, 50]), _jitter(rng, [80, 65, 40]), _waves(rng, 3, (12.0, 48.0))
        ),
        _WATER: Texture(
            _jitter(rng, [20, 90, 150]), _jitter(rng, [60, 140, 190]), _waves(rng, 1, (8.0, 20.0))
        ),
        VOID: _object_texture(rng, 10.0),
        crowd_category: _object_texture(rng, 10.0),
    }
    return WorldPlane(horizon, pond, patches, blobs, crowd_category, textures)


def _bonnet(rng: np.random.Generator, height: int, width: int):
    """The pixels (H, W) bool whose centre lies below the arc ``y = H - depth (1 - ((x - cx) /
    half_width)^2)`` spanning the frame's bottom, and their (N, 3) float32 colours."""
    depth = height * rng.uniform(0.08, 0.15)
    cx, half_width = width * rng.uniform(0.4, 0.6), width * rng.uniform(0.7, 0.9)
    px, py = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    mask = py > height - depth * np.clip(1 - ((px - cx) / half_width) ** 2, 0, None)
    ramp = (0.0, -1.0 / depth, 0.0)  # dark at the bottom, lighter towards its top edge
    texture = Texture(
        _jitter(rng, [30, 30, 35]), _jitter(rng, [95, 95, 105]), np.zeros((0, 3)), ramp
    )
    return mask, texture(px[mask], py[mask] - height)


def _thing_id(rng: np.random.Generator, category_id: int, taken: set) -> int:
    """panopticapi's ``IdGenerator`` rule: the class colour if free, else a jittered one."""
    base = np.asarray(_COLORS[category_id])
    color = base
    while _color_id(color) in taken:
        color = np.clip(base + rng.integers(-30, 31, 3), 0, 255)
    taken.add(_color_id(color))
    return _color_id(color)


@dataclass
class PanopticVideo:
    """All raw frames of a video with their panoptic ground truth.

    frames: (T, H, W, 3) uint8 RGB. panoptic: (T, H, W) int64 segment ids, 0 = VOID.
    layers: (T, H, W) int32, the layer seen at each pixel: 0 the background plane (stuff,
    crowd, VOID patches), k = ``video.objects[k - 1]``, -1 the bonnet.
    segments: {segment id: (category id, iscrowd)} of every segment of the video.
    video: the :class:`SyntheticVideo` of the camera and the shapes (its frames and instance
    maps are those before the world and the bonnet were drawn).
    """

    frames: np.ndarray
    panoptic: np.ndarray
    layers: np.ndarray
    segments: Dict[int, Tuple[int, int]]
    video: SyntheticVideo


def render_panoptic_video(
    seed: int, index: int, height: int, width: int, max_objects: int
) -> PanopticVideo:
    """Video ``index`` of a split of ``seed`` (module doc), ``NUM_RAW_FRAMES`` raw frames."""
    video = render_video(seed, index, NUM_RAW_FRAMES, height, width, max_objects, FRAME_STEP)
    rng = np.random.default_rng([int(seed), int(index), 1])
    world = _world_plane(rng, height, width, crowd=index % 4 == 1)
    bonnet, bonnet_colors = _bonnet(rng, height, width)
    bonnet_colors = np.clip(bonnet_colors, 0, 255).round().astype(np.uint8)
    region_ids = {c["id"]: _color_id(c["color"]) for c in STUFF_CATEGORIES}
    region_ids[VOID] = 0
    segments = {i: (c, 0) for c, i in region_ids.items() if c != VOID}
    taken = set(region_ids.values())
    if len(world.crowd):
        region_ids[world.crowd_category] = _thing_id(rng, world.crowd_category, taken)
        segments[region_ids[world.crowd_category]] = (world.crowd_category, 1)
    thing_ids = np.zeros(len(video.objects) + 1, np.int64)
    for k, obj in enumerate(video.objects, start=1):
        thing_ids[k] = _thing_id(rng, obj.category_id, taken)
        segments[int(thing_ids[k])] = (obj.category_id, 0)
    frames = video.frames.copy()
    panoptic = np.zeros(video.instance_maps.shape, np.int64)
    layers = video.instance_maps.copy()
    px, py = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    for t in range(NUM_RAW_FRAMES):
        inst = video.instance_maps[t]
        u, v = video.background.to_texture(t, px, py)
        regions = world.regions(u, v)
        plane = inst == 0
        colors = world.colors(regions[plane], u[plane], v[plane])
        frames[t][plane] = np.clip(colors, 0, 255).round().astype(np.uint8)
        frames[t][bonnet] = bonnet_colors
        for region, segment_id in region_ids.items():
            panoptic[t][plane & (regions == region)] = segment_id
        panoptic[t][~plane] = thing_ids[inst[~plane]]
        panoptic[t][bonnet] = VOID
        layers[t][bonnet] = -1
    return PanopticVideo(frames, panoptic, layers, segments, video)


def exact_flow(video: PanopticVideo, t0: int, t1: int) -> np.ndarray:
    """(H, W, 2) float32 flow of raw frame ``t0`` to raw frame ``t1`` (module doc): per pixel,
    where the surface seen at ``t0`` is at ``t1`` (its layer's motion), minus the pixel."""
    layers = video.layers[t0]
    height, width = layers.shape
    px, py = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    flow = np.zeros((height, width, 2), np.float32)  # the bonnet (-1) stays where it is
    motions = [video.video.background] + [o.motion for o in video.video.objects]
    for k, motion in enumerate(motions):
        sel = layers == k
        x1, y1 = motion.to_image(t1, *motion.to_texture(t0, px[sel], py[sel]))
        flow[sel] = np.stack([x1 - px[sel], y1 - py[sel]], 1)
    return flow


def raw_frame_name(video: int, t: int) -> str:
    """``img_all`` file of raw frame ``t`` of video ``video`` (0-based)."""
    return f"{CITY}_{video + 1:06d}_{t:06d}_leftImg8bit.png"


def write_synthetic_panoptic_videos(
    out_dir: str,
    num_videos: int,
    image_size: Tuple[int, int],
    seed: int,
    max_objects: int,
    split: str,
) -> Dict[str, int]:
    """Write ``num_videos`` videos (:func:`render_panoptic_video`) as the ``split`` of a new
    Cityscapes-VPS folder ``out_dir`` (module doc); returns counts of annotated frames
    ("images") and thing tracks ("instances")."""
    height, width = image_size
    folders = ("img", "img_all", "panoptic_video", "flow", "flow_prev")
    for folder in folders:
        os.makedirs(os.path.join(out_dir, split, folder))
    path = dict(zip(folders, (os.path.join(out_dir, split, f) for f in folders)))
    images, annotations, raw_images, tracks = [], [], [], 0
    for i in range(num_videos):
        video = render_panoptic_video(seed, i, height, width, max_objects)
        for t in range(NUM_RAW_FRAMES):
            name = raw_frame_name(i, t)
            Image.fromarray(video.frames[t]).save(os.path.join(path["img_all"], name))
            raw_images.append(
                {"id": len(raw_images) + 1, "width": width, "height": height, "file_name": name}
            )
        shown = set()
        for f, t in enumerate(ANNOTATED_FRAMES):
            image_id = f"{i + 1:04d}_{len(images) + 1:04d}_{CITY}_{i + 1:06d}_{t:06d}"
            file_name = image_id + ("_leftImg8bit.png" if f == GT_FINE_INDEX else "_newImg8bit.png")
            shutil.copyfile(
                os.path.join(path["img_all"], raw_frame_name(i, t)),
                os.path.join(path["img"], file_name),
            )
            png = gt_png_name(file_name)
            Image.fromarray(id2rgb(video.panoptic[t])).save(
                os.path.join(path["panoptic_video"], png)
            )
            segments = []
            for segment_id, area in zip(*np.unique(video.panoptic[t], return_counts=True)):
                if segment_id == VOID:
                    continue
                category_id, iscrowd = video.segments[int(segment_id)]
                segments.append(
                    {
                        "id": int(segment_id),
                        "category_id": category_id,
                        "iscrowd": iscrowd,
                        "area": int(area),
                    }
                )
                shown.add(int(segment_id))
            images.append(
                {"id": image_id, "width": width, "height": height, "file_name": file_name}
            )
            annotations.append({"image_id": image_id, "file_name": png, "segments_info": segments})
            if f + 1 < FRAMES_PER_VIDEO:
                flow = exact_flow(video, t, t + FRAME_SPACING)
                np.save(os.path.join(path["flow"], image_id + ".npy"), flow)
            if f > 0:
                flow = exact_flow(video, t, t - FRAME_SPACING)
                np.save(os.path.join(path["flow_prev"], image_id + ".npy"), flow)
        tracks += sum(
            video.segments[s][0] in _THING_IDS and not video.segments[s][1] for s in shown
        )
    categories = coco_categories(include_stuff=True)
    for name, data in (
        (f"panoptic_gt_{split}_city_vps.json", {"images": images, "annotations": annotations}),
        (f"im_all_info_{split}_city_vps.json", {"images": raw_images}),
    ):
        with open(os.path.join(out_dir, name), "w") as fp:
            json.dump({**data, "categories": categories}, fp)
    return {"images": len(images), "instances": tracks}


@dataclass(frozen=True)
class PanopticVideoSpec:
    """What to generate: ``num_videos`` videos of (H, W) ``image_size`` with up to
    ``max_objects`` moving shapes, as split ``split``; video ``i`` depends only on (seed, i)."""

    num_videos: int
    image_size: Tuple[int, int]
    seed: int
    max_objects: int = 6
    split: str = "val"

    def __post_init__(self):
        # image ids number the annotated frames of the split with 4 digits
        max_videos = 9999 // FRAMES_PER_VIDEO
        if not 1 <= int(self.num_videos) <= max_videos:
            raise ValueError(f"num_videos must be in [1, {max_videos}], got {self.num_videos}")
        if len(self.image_size) != 2 or min(self.image_size) < 32:
            raise ValueError(f"image_size must be (H, W) >= 32, got {self.image_size}")
        if int(self.max_objects) < 1:
            raise ValueError(f"max_objects must be >= 1, got {self.max_objects}")
        if not self.split.isalnum():
            raise ValueError(f"split must be a letters-and-digits name, got {self.split!r}")
        object.__setattr__(self, "image_size", (int(self.image_size[0]), int(self.image_size[1])))

    def to_json(self) -> Dict:
        return {
            **asdict(self),
            "kind": "panoptic_videos",
            "image_size": list(self.image_size),
            "version": GENERATOR_VERSION,
            "renderer_version": RENDERER_VERSION,
        }


def generate_panoptic_videos(spec: PanopticVideoSpec, out_dir: str) -> bool:
    """Make ``out_dir`` hold the videos of ``spec``; returns False if it already did (the
    marker, lock and atomic rename of :func:`generate.generate_atomically`)."""

    def write(folder: str) -> Dict[str, int]:
        return write_synthetic_panoptic_videos(
            folder, spec.num_videos, spec.image_size, spec.seed, spec.max_objects, spec.split
        )

    return generate_atomically(spec, out_dir, write, "panoptic videos")
