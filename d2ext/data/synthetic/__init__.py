"""Synthetic datasets for fast, self-contained training and evaluation tests.

Importing registers the builtins (``synth_shapes_{train,val}``, ``synth_panoptic_{train,val,test}``
with ``_separated`` / ``_stuffonly`` variants, ``synth_faces_*`` (68 iBUG face landmarks),
``synth_bodies_*`` (17 COCO person keypoints), ``synth_densepose_*`` (DensePose figures) and
``synth_videos_*`` with ``_clips`` variants (moving shapes, YouTube-VIS + exact flow) and
``synth_vps_{train,val,test}`` (panoptic videos in the Cityscapes-VPS layout)) in D2's catalogs;
files are generated on first ``DatasetCatalog.get`` or :func:`ensure_synthetic_generated`. See
``register.py``.
"""

from .categories import STUFF_CATEGORIES, THING_CATEGORIES
from .faces import FaceScene, render_face, render_face_image
from .generate import SyntheticSpec, generate, is_generated, render_image
from .panoptic_videos import PanopticVideoSpec, generate_panoptic_videos, render_panoptic_video
from .register import (
    BUILTIN_DATASETS,
    builtin_spec,
    ensure_synthetic_generated,
    person_keypoints_metadata,
    register_all_synthetic,
    register_synthetic,
    register_synthetic_bodies,
    register_synthetic_densepose,
    register_synthetic_faces,
    register_synthetic_panoptic,
    register_synthetic_shapes,
    register_synthetic_videos,
    synthetic_dataset_dir,
    synthetic_root,
)
from .register_panoptic_videos import register_synthetic_panoptic_videos

register_all_synthetic()

__all__ = [
    "BUILTIN_DATASETS",
    "STUFF_CATEGORIES",
    "THING_CATEGORIES",
    "FaceScene",
    "PanopticVideoSpec",
    "SyntheticSpec",
    "builtin_spec",
    "ensure_synthetic_generated",
    "generate",
    "generate_panoptic_videos",
    "is_generated",
    "person_keypoints_metadata",
    "register_all_synthetic",
    "register_synthetic",
    "register_synthetic_bodies",
    "register_synthetic_densepose",
    "register_synthetic_faces",
    "register_synthetic_panoptic_videos",
    "register_synthetic_panoptic",
    "register_synthetic_shapes",
    "register_synthetic_videos",
    "render_face",
    "render_face_image",
    "render_image",
    "render_panoptic_video",
    "synthetic_dataset_dir",
    "synthetic_root",
]
