"""Registration of the synthetic panoptic videos (``panoptic_videos.py``) as Cityscapes-VPS
datasets, generated lazily on first use like the other synthetic builtins (``register.py``).

The loader is :func:`d2ext.data.cityscapes_vps.load_cityscapes_vps_json` and the metadata is
what :func:`~d2ext.data.cityscapes_vps.register_cityscapes_vps` sets for the generated files
(``evaluator_type="cityscapes_vps"``, ``frames_per_video``, the panoptic json and roots, the
categories of ``synth_panoptic``); that function reads the json when called, so the files'
registration (:func:`~d2ext.data.cityscapes_vps.register_cityscapes_vps_files`) is called here
with the metadata known in advance. Added keys: ``raw_image_root`` (``<split>/img_all``),
``flow_root`` (``<split>/flow``: annotated frame -> next annotated frame) and
``flow_prev_root`` (``<split>/flow_prev``: -> previous), files ``<image id>.npy``.
"""

import os
from typing import Optional, Tuple

from ..cityscapes_vps import register_cityscapes_vps_files
from .categories import panoptic_standard_metadata
from .panoptic_videos import PanopticVideoSpec, generate_panoptic_videos
from .register import _make_lazy, _prepare, synthetic_root

__all__ = [
    "BUILTIN_PANOPTIC_VIDEOS",
    "register_builtin_panoptic_videos",
    "register_synthetic_panoptic_videos",
]

BUILTIN_IMAGE_SIZE = (128, 256)
BUILTIN_MAX_OBJECTS = 6
# name -> (videos of 6 annotated frames, seed, split)
BUILTIN_PANOPTIC_VIDEOS = {
    "synth_vps_train": (24, 81, "train"),
    "synth_vps_val": (8, 82, "val"),
    # the held-out videos of the reported VPQ comparison (docs/RESULTS.md): 8 validation videos
    # leave margins between models inside the evaluation noise
    "synth_vps_test": (32, 83, "val"),
}


def register_synthetic_panoptic_videos(
    name: str,
    root: Optional[str] = None,
    num_videos: int = 24,
    image_size: Tuple[int, int] = BUILTIN_IMAGE_SIZE,
    seed: int = 0,
    max_objects: int = BUILTIN_MAX_OBJECTS,
    split: str = "val",
) -> PanopticVideoSpec:
    """Register ``name``: panoptic videos (module doc of ``panoptic_videos.py``) generated in
    ``<root>/synth_vps/<name>/`` on first use as split ``split`` of a Cityscapes-VPS folder;
    ``root`` defaults to :func:`synthetic_root`. Re-registering with the same arguments is a
    no-op."""
    spec = PanopticVideoSpec(num_videos, tuple(image_size), seed, max_objects, split)
    out_dir = os.path.abspath(os.path.join(root or synthetic_root(), "synth_vps", name))
    if _prepare(name, spec, out_dir):
        json_file = os.path.join(out_dir, f"panoptic_gt_{split}_city_vps.json")
        image_root, panoptic_root, raw_image_root, flow_root, flow_prev_root = (
            os.path.join(out_dir, split, folder)
            for folder in ("img", "panoptic_video", "img_all", "flow", "flow_prev")
        )
        register_cityscapes_vps_files(
            name,
            panoptic_standard_metadata(),
            json_file,
            image_root,
            panoptic_root,
            raw_image_root=raw_image_root,
            flow_root=flow_root,
            flow_prev_root=flow_prev_root,
        )
        _make_lazy((name,), spec, out_dir, generator=generate_panoptic_videos)
    return spec


def register_builtin_panoptic_videos(root: Optional[str] = None) -> None:
    """Register :data:`BUILTIN_PANOPTIC_VIDEOS`; nothing is generated."""
    for name, (num_videos, seed, split) in BUILTIN_PANOPTIC_VIDEOS.items():
        register_synthetic_panoptic_videos(
            name, root, num_videos, BUILTIN_IMAGE_SIZE, seed, BUILTIN_MAX_OBJECTS, split
        )
