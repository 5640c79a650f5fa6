"""Registration of the synthetic datasets in D2's catalogs, generated lazily on first use.

Registration goes through D2's own ``register_coco_instances`` / ``register_coco_panoptic`` /
``register_coco_panoptic_separated`` (so metadata and loaders are exactly D2's); only the
loader in ``DatasetCatalog`` is wrapped so that the files are generated before it runs.
Because D2 evaluators read files (``json_file``, ``panoptic_json``) from metadata without
touching ``DatasetCatalog``, call :func:`ensure_synthetic_generated` before building them.

Builtin names (generated under ``$DETECTRON2_DATASETS`` (default ``./datasets``)):

* ``synth_shapes_{train,val}``: instance segmentation (``evaluator_type="coco"``), in
  ``synth_shapes/<name>/``.
* ``synth_panoptic_{train,val,test}``: D2 "standard" panoptic (``coco_panoptic_seg``), with
  ``synth_panoptic_{train,val,test}_separated`` (PanopticFPN: instances + semantic, things -> 0)
  and ``synth_panoptic_{train,val,test}_stuffonly`` (``sem_seg``) as D2 names them, in
  ``synth_panoptic/<name>/``.
* ``synth_faces_{train,val,mini_train,mini_val}``: 128x128 faces with 68 iBUG landmarks
  (images + ``.pts``, loaded by ``d2ext.data.ibug_pts``; ``evaluator_type="landmark"``), in
  ``synth_faces/<name>/``.
* ``synth_bodies_{train,val,mini_train,mini_val}``: 192x192 stick figures with the 17 COCO
  person keypoints (COCO keypoints json, loaded by D2's ``load_coco_json``;
  ``evaluator_type="coco"``), in ``synth_bodies/<name>/``.
* ``synth_face_scenes_{train,val,mini_train,mini_val}``: 320x320 scenes of up to 15 faces of
  8-272 px with the five RetinaFace landmarks (RetinaFace ``label.txt`` loaded by
  ``d2ext.data.wider_face``, official ``.mat`` keep-lists in ``wider_gt_dir``;
  ``evaluator_type="widerface"``), in ``synth_face_scenes/<name>/``.
* ``synth_densepose_{train,val,mini_train,mini_val}``: 192x192 scenes of 1-4 articulated
  figures with DensePose parts and UV charts (DensePose-COCO json loaded by
  ``d2ext.data.densepose_coco``, flipped through the builtin synthetic UV symmetry table;
  ``evaluator_type="densepose"``), in ``synth_densepose/<name>/``.
* ``synth_videos_{train,val,mini_train,mini_val}``: 160x224 videos of 12 frames with moving
  shapes (``videos.py``; YouTube-VIS json + JPEG frames + exact flow ``.npy``, loaded by
  ``d2ext.data.youtube_vis``): per-frame D2 dicts (``evaluator_type="coco"``) and, as
  ``synth_videos_*_clips``, one dict per video (``evaluator_type="youtube_vis"``), in
  ``synth_videos/<name>/``.
* ``synth_vps_{train,val,test}``: 128x256 panoptic videos in the Cityscapes-VPS layout
  (``panoptic_videos.py``, registered by ``register_panoptic_videos.py``; loaded by
  ``d2ext.data.cityscapes_vps``, ``evaluator_type="cityscapes_vps"``), in ``synth_vps/<name>/``.
"""

import functools
import os
from typing import Callable, Dict, Iterable, List, Optional, Tuple, Union

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import (
    load_coco_json,
    register_coco_instances,
    register_coco_panoptic,
    register_coco_panoptic_separated,
)
from detectron2.data.datasets.builtin_meta import (
    COCO_PERSON_KEYPOINT_FLIP_MAP,
    COCO_PERSON_KEYPOINT_NAMES,
    KEYPOINT_CONNECTION_RULES,
)

from ..dataset_checks import add_dataset_checks
from ..densepose_coco import load_densepose_coco_json
from ..densepose_flip import SYNTHETIC_UV_SYMMETRY
from ..ibug_pts import register_ibug_pts
from ..wider_face import load_wider_face_label, wider_face_metadata
from ..youtube_vis import load_youtube_vis_clips, load_youtube_vis_json, youtube_vis_metadata
from .categories import (
    coco_categories,
    instances_metadata,
    panoptic_separated_metadata,
    panoptic_standard_metadata,
)
from .generate import DEFAULT_NUM_FRAMES, SyntheticSpec, generate
from .panoptic_videos import PanopticVideoSpec

# dataset name -> (spec, directory, all names registered together with it, the function that
# writes the spec into the directory)
_REGISTERED: Dict[
    str, Tuple[Union[SyntheticSpec, PanopticVideoSpec], str, Tuple[str, ...], Callable]
] = {}

# name -> (kind, num_images, seed); image sizes per kind in BUILTIN_IMAGE_SIZES
BUILTIN_DATASETS: Dict[str, Tuple[str, int, int]] = {
    "synth_shapes_train": ("shapes", 200, 1),
    "synth_shapes_val": ("shapes", 50, 2),
    # held out from both: where test-time settings (e.g. MODEL.YOLACT.MASK_THRESHOLD) are
    # chosen, so that numbers reported on synth_shapes_val are not tuned on it
    "synth_shapes_tune": ("shapes", 100, 21),
    "synth_panoptic_train": ("panoptic", 150, 3),
    "synth_panoptic_val": ("panoptic", 40, 4),
    # a larger held-out split for the reported comparisons (docs/RESULTS.md): 40 validation
    # images leave a seed-to-seed spread of ~1.4 PQ, evaluation noise included
    "synth_panoptic_test": ("panoptic", 200, 9),
    # tiny splits for smoke tests and quick checks (same scenes' distribution, other seeds)
    "synth_shapes_mini_train": ("shapes", 16, 5),
    "synth_shapes_mini_val": ("shapes", 8, 6),
    "synth_panoptic_mini_train": ("panoptic", 16, 7),
    "synth_panoptic_mini_val": ("panoptic", 8, 8),
    "synth_faces_train": ("faces", 1000, 31),
    "synth_faces_val": ("faces", 200, 32),
    "synth_faces_mini_train": ("faces", 16, 33),
    "synth_faces_mini_val": ("faces", 8, 34),
    "synth_bodies_train": ("bodies", 400, 41),
    "synth_bodies_val": ("bodies", 100, 42),
    "synth_bodies_mini_train": ("bodies", 16, 43),
    "synth_bodies_mini_val": ("bodies", 8, 44),
    "synth_face_scenes_train": ("face_scenes", 800, 51),
    "synth_face_scenes_val": ("face_scenes", 200, 52),
    "synth_face_scenes_mini_train": ("face_scenes", 16, 53),
    "synth_face_scenes_mini_val": ("face_scenes", 8, 54),
    "synth_densepose_train": ("densepose", 400, 61),
    "synth_densepose_val": ("densepose", 100, 62),
    "synth_densepose_mini_train": ("densepose", 16, 63),
    "synth_densepose_mini_val": ("densepose", 8, 64),
    # videos: num_images counts videos (of BUILTIN_NUM_FRAMES frames)
    "synth_videos_train": ("videos", 24, 71),
    "synth_videos_val": ("videos", 8, 72),
    "synth_videos_mini_train": ("videos", 4, 73),
    "synth_videos_mini_val": ("videos", 2, 74),
}
BUILTIN_IMAGE_SIZE = (256, 256)
# small images keep CPU training of the landmark models fast
# face scenes: the CPU RetinaFace configs train at INPUT.RETINAFACE.TRAIN_SIZE 320
BUILTIN_IMAGE_SIZES = {
    "faces": (128, 128),
    "bodies": (192, 192),
    "face_scenes": (320, 320),
    "densepose": (192, 192),
    "videos": (160, 224),
}
# max_objects of a kind's builtins where not SyntheticSpec's default (figures per image,
# shapes per video)
BUILTIN_MAX_OBJECTS = {"densepose": 4, "videos": 6}
BUILTIN_NUM_FRAMES = {"videos": DEFAULT_NUM_FRAMES}


def synthetic_root() -> str:
    """Where builtins live: ``$DETECTRON2_DATASETS`` (default ``datasets``), as D2's builtins."""
    return os.path.expanduser(os.environ.get("DETECTRON2_DATASETS", "datasets"))


def builtin_spec(name: str) -> SyntheticSpec:
    kind, num_images, seed = BUILTIN_DATASETS[name]
    size = BUILTIN_IMAGE_SIZES.get(kind, BUILTIN_IMAGE_SIZE)
    max_objects = BUILTIN_MAX_OBJECTS.get(kind, 15)
    return SyntheticSpec(kind, num_images, size, seed, max_objects, BUILTIN_NUM_FRAMES.get(kind))


def _generate_then_load(generator: Callable, spec, out_dir: str, load: Callable[[], List[dict]]):
    generator(spec, out_dir)
    return load()


def _unregister(names: Iterable[str]) -> None:
    for n in names:
        if n in DatasetCatalog.list():
            DatasetCatalog.remove(n)
        if n in MetadataCatalog.list():
            MetadataCatalog.remove(n)
        _REGISTERED.pop(n, None)


def _prepare(name: str, spec: SyntheticSpec, out_dir: str) -> bool:
    """False if ``name`` is already registered with this spec and dir; else frees the names
    (a synthetic dataset registered with another spec is replaced; any other name clashes)."""
    if name in _REGISTERED:
        old_spec, old_dir, old_names, _ = _REGISTERED[name]
        if (old_spec, old_dir) == (spec, out_dir):
            return False
        _unregister(old_names)
    elif name in DatasetCatalog.list():
        raise ValueError(f"Dataset {name!r} is already registered and is not a synthetic dataset")
    return True


def _make_lazy(
    names: Tuple[str, ...],
    spec: SyntheticSpec,
    out_dir: str,
    checked: Optional[Tuple[str, ...]] = None,
    generator: Callable = generate,
) -> None:
    """Generate (``generator(spec, out_dir)``) before D2's loader runs, and validate what the
    ``checked`` names (default: all) load (D2-format dicts; per-clip dicts are not)."""
    for n in names:
        load = DatasetCatalog[n]  # the loader D2's register_* installed (not called here)
        DatasetCatalog.remove(n)
        DatasetCatalog.register(
            n, functools.partial(_generate_then_load, generator, spec, out_dir, load)
        )
        _REGISTERED[n] = (spec, out_dir, names, generator)
    add_dataset_checks(names if checked is None else checked)


def register_synthetic_shapes(
    name: str,
    root: Optional[str] = None,
    num_images: int = 200,
    image_size: Tuple[int, int] = BUILTIN_IMAGE_SIZE,
    seed: int = 0,
    max_objects: int = 15,
) -> SyntheticSpec:
    """Register a "shapes" instance-segmentation dataset ``name`` (COCO format, generated in
    ``<root>/synth_shapes/<name>/`` on first use; ``root`` defaults to :func:`synthetic_root`).
    ``image_size`` is (H, W). Re-registering with the same arguments is a no-op."""
    spec = SyntheticSpec("shapes", num_images, tuple(image_size), seed, max_objects)
    out_dir = os.path.abspath(os.path.join(root or synthetic_root(), "synth_shapes", name))
    if _prepare(name, spec, out_dir):
        register_coco_instances(
            name,
            instances_metadata(),
            os.path.join(out_dir, "instances.json"),
            os.path.join(out_dir, "images"),
        )
        _make_lazy((name,), spec, out_dir)
    return spec


def register_synthetic_panoptic(
    name: str,
    root: Optional[str] = None,
    num_images: int = 150,
    image_size: Tuple[int, int] = BUILTIN_IMAGE_SIZE,
    seed: int = 0,
    max_objects: int = 15,
) -> SyntheticSpec:
    """Register a panoptic dataset (things + sky/ground/water stuff) generated in
    ``<root>/synth_panoptic/<name>/`` on first use, under three names as D2's COCO panoptic:
    ``name`` (standard, ``register_coco_panoptic``), ``name + "_separated"`` and
    ``name + "_stuffonly"`` (``register_coco_panoptic_separated``)."""
    spec = SyntheticSpec("panoptic", num_images, tuple(image_size), seed, max_objects)
    out_dir = os.path.abspath(os.path.join(root or synthetic_root(), "synth_panoptic", name))
    if _prepare(name, spec, out_dir):
        j = functools.partial(os.path.join, out_dir)
        register_coco_panoptic(
            name,
            panoptic_standard_metadata(),
            j("images"),
            j("panoptic"),
            j("panoptic.json"),
            j("instances.json"),
        )
        register_coco_panoptic_separated(
            name,
            panoptic_separated_metadata(),
            j("images"),
            j("panoptic"),
            j("panoptic.json"),
            j("semantic"),
            j("instances.json"),
        )
        _make_lazy((name, name + "_separated", name + "_stuffonly"), spec, out_dir)
    return spec


def register_synthetic_faces(
    name: str,
    root: Optional[str] = None,
    num_images: int = 1000,
    image_size: Tuple[int, int] = BUILTIN_IMAGE_SIZES["faces"],
    seed: int = 0,
) -> SyntheticSpec:
    """Register a faces dataset ``name`` (one face per image, 68 iBUG landmarks) generated in
    ``<root>/synth_faces/<name>/`` on first use as images + ``.pts`` + ``visibility.json`` and
    loaded by :func:`d2ext.data.ibug_pts.load_ibug_pts_dataset`, as a user's 300-W data is."""
    spec = SyntheticSpec("faces", num_images, tuple(image_size), seed)
    out_dir = os.path.abspath(os.path.join(root or synthetic_root(), "synth_faces", name))
    if _prepare(name, spec, out_dir):
        j = functools.partial(os.path.join, out_dir)
        register_ibug_pts(name, j("images"), visibility_file=j("visibility.json"))
        _make_lazy((name,), spec, out_dir)
    return spec


def person_keypoints_metadata() -> Dict:
    """D2 metadata of a COCO person keypoints set (D2's own names, flip map and colours)."""
    return {
        "thing_classes": ["person"],
        "thing_dataset_id_to_contiguous_id": {1: 0},
        "keypoint_names": COCO_PERSON_KEYPOINT_NAMES,
        "keypoint_flip_map": COCO_PERSON_KEYPOINT_FLIP_MAP,
        "keypoint_connection_rules": KEYPOINT_CONNECTION_RULES,
    }


def register_synthetic_bodies(
    name: str,
    root: Optional[str] = None,
    num_images: int = 400,
    image_size: Tuple[int, int] = BUILTIN_IMAGE_SIZES["bodies"],
    seed: int = 0,
) -> SyntheticSpec:
    """Register a bodies dataset ``name`` (stick figures, 17 COCO keypoints, per-person
    ``head_size``) generated in ``<root>/synth_bodies/<name>/`` on first use as a COCO person
    keypoints json, loaded by D2's ``load_coco_json`` (``evaluator_type="coco"``)."""
    spec = SyntheticSpec("bodies", num_images, tuple(image_size), seed)
    out_dir = os.path.abspath(os.path.join(root or synthetic_root(), "synth_bodies", name))
    if _prepare(name, spec, out_dir):
        json_file = os.path.join(out_dir, "person_keypoints.json")
        image_root = os.path.join(out_dir, "images")
        DatasetCatalog.register(
            name,
            functools.partial(
                load_coco_json, json_file, image_root, name, extra_annotation_keys=["head_size"]
            ),
        )
        MetadataCatalog.get(name).set(
            json_file=json_file,
            image_root=image_root,
            evaluator_type="coco",
            **person_keypoints_metadata(),
        )
        _make_lazy((name,), spec, out_dir)
    return spec


def register_synthetic_face_scenes(
    name: str,
    root: Optional[str] = None,
    num_images: int = 800,
    image_size: Tuple[int, int] = BUILTIN_IMAGE_SIZES["face_scenes"],
    seed: int = 0,
    max_faces: int = 15,
) -> SyntheticSpec:
    """Register a face-scenes dataset ``name`` (``face_scenes.py``) generated in
    ``<root>/synth_face_scenes/<name>/`` on first use as ``images/<event>/*.jpg`` + a RetinaFace
    ``label.txt`` (loaded by :func:`d2ext.data.wider_face.load_wider_face_label`, as WIDER FACE
    is) + the four official ``.mat`` files in ``gt/`` (metadata ``wider_gt_dir``)."""
    spec = SyntheticSpec("face_scenes", num_images, tuple(image_size), seed, max_faces)
    out_dir = os.path.abspath(os.path.join(root or synthetic_root(), "synth_face_scenes", name))
    if _prepare(name, spec, out_dir):
        j = functools.partial(os.path.join, out_dir)
        DatasetCatalog.register(
            name, functools.partial(load_wider_face_label, j("label.txt"), j("images"))
        )
        MetadataCatalog.get(name).set(
            **wider_face_metadata(
                image_root=j("images"), annotation_file=j("label.txt"), wider_gt_dir=j("gt")
            )
        )
        _make_lazy((name,), spec, out_dir)
    return spec


def register_synthetic_densepose(
    name: str,
    root: Optional[str] = None,
    num_images: int = 400,
    image_size: Tuple[int, int] = BUILTIN_IMAGE_SIZES["densepose"],
    seed: int = 0,
    max_persons: int = BUILTIN_MAX_OBJECTS["densepose"],
) -> SyntheticSpec:
    """Register a DensePose figures dataset ``name`` (``densepose_figures.py``) generated in
    ``<root>/synth_densepose/<name>/`` on first use as ``images/*.png`` + a DensePose-COCO
    ``densepose.json``, registered by :func:`d2ext.data.densepose_coco.register_densepose_coco`
    (as a user's DensePose-COCO data is) with the builtin synthetic UV symmetry table."""
    spec = SyntheticSpec("densepose", num_images, tuple(image_size), seed, max_persons)
    out_dir = os.path.abspath(os.path.join(root or synthetic_root(), "synth_densepose", name))
    if _prepare(name, spec, out_dir):
        j = functools.partial(os.path.join, out_dir)
        DatasetCatalog.register(
            name,
            functools.partial(load_densepose_coco_json, j("densepose.json"), j("images"), name),
        )
        MetadataCatalog.get(name).set(
            thing_classes=["person"],
            thing_dataset_id_to_contiguous_id={1: 0},
            json_file=j("densepose.json"),
            image_root=j("images"),
            evaluator_type="densepose",
            densepose_transform_src=SYNTHETIC_UV_SYMMETRY,
        )
        _make_lazy((name,), spec, out_dir)
    return spec


def register_synthetic_videos(
    name: str,
    root: Optional[str] = None,
    num_videos: int = 24,
    image_size: Tuple[int, int] = BUILTIN_IMAGE_SIZES["videos"],
    seed: int = 0,
    max_objects: int = BUILTIN_MAX_OBJECTS["videos"],
    num_frames: int = DEFAULT_NUM_FRAMES,
) -> SyntheticSpec:
    """Register synthetic videos (``videos.py``) generated in ``<root>/synth_videos/<name>/`` on
    first use as YouTube-VIS (``instances.json``, ``JPEGImages/``) + exact flow (``Flow/``),
    loaded by :mod:`d2ext.data.youtube_vis` under two names: ``name`` (per-frame D2 dicts, with
    ``flow_file``) and ``name + "_clips"`` (one dict per video; metadata ``frame_dataset=name``,
    so its video evaluation adds the frames' COCO AP)."""
    spec = SyntheticSpec("videos", num_videos, tuple(image_size), seed, max_objects, num_frames)
    out_dir = os.path.abspath(os.path.join(root or synthetic_root(), "synth_videos", name))
    if _prepare(name, spec, out_dir):
        j = functools.partial(os.path.join, out_dir)
        paths = (j("instances.json"), j("JPEGImages"), j("Flow"))
        categories = coco_categories(include_stuff=False)
        for n, load, clips in (
            (name, load_youtube_vis_json, False),
            (name + "_clips", load_youtube_vis_clips, True),
        ):
            DatasetCatalog.register(n, functools.partial(load, *paths))
            meta = youtube_vis_metadata(categories, *paths, clips=clips, frame_dataset=name)
            MetadataCatalog.get(n).set(**meta)
        _make_lazy((name, name + "_clips"), spec, out_dir, checked=(name,))
    return spec


def register_synthetic(
    name: str, root: Optional[str] = None, spec: Optional[SyntheticSpec] = None
) -> SyntheticSpec:
    """Register ``name`` as a synthetic dataset of ``spec`` (default: the builtin's) with the
    ``register_synthetic_<kind>`` of its kind."""
    spec = builtin_spec(name) if spec is None else spec
    args = (name, root, spec.num_images, spec.image_size, spec.seed)
    if spec.kind in ("shapes", "panoptic"):
        register = (
            register_synthetic_shapes if spec.kind == "shapes" else register_synthetic_panoptic
        )
        return register(*args, spec.max_objects)
    if spec.kind == "face_scenes":
        return register_synthetic_face_scenes(*args, spec.max_objects)
    if spec.kind == "densepose":
        return register_synthetic_densepose(*args, spec.max_objects)
    if spec.kind == "videos":
        return register_synthetic_videos(*args, spec.max_objects, spec.num_frames)
    register = register_synthetic_faces if spec.kind == "faces" else register_synthetic_bodies
    return register(*args)


def register_all_synthetic(root: Optional[str] = None) -> None:
    """Register the builtin synthetic datasets (:data:`BUILTIN_DATASETS` and the panoptic
    videos'); nothing is generated."""
    from .register_panoptic_videos import register_builtin_panoptic_videos

    for name in BUILTIN_DATASETS:
        register_synthetic(name, root)
    register_builtin_panoptic_videos(root)


def synthetic_dataset_dir(name: str) -> Optional[str]:
    """The directory of synthetic dataset ``name`` (any of its registered names), else None."""
    return _REGISTERED[name][1] if name in _REGISTERED else None


def ensure_synthetic_generated(dataset_names: Union[str, Iterable[str]]) -> List[str]:
    """Generate (if not yet on disk with the same spec) every synthetic dataset among
    ``dataset_names``; other names are ignored. Returns the synthetic names among them.
    Call it before building evaluators, which read the json files from metadata."""
    names = [dataset_names] if isinstance(dataset_names, str) else list(dataset_names)
    synthetic = [n for n in names if n in _REGISTERED]
    for n in synthetic:
        spec, out_dir, _, generator = _REGISTERED[n]
        generator(spec, out_dir)
    return synthetic
