#!/usr/bin/env python
"""Generate d2ext's synthetic datasets on disk (they are otherwise generated on first use).

    python tools/make_synthetic.py                       # all builtins, in $DETECTRON2_DATASETS
    python tools/make_synthetic.py synth_shapes_val --root /tmp/ds
    python tools/make_synthetic.py synth_panoptic_train --num-images 20 --size 128 160 --seed 7
    python tools/make_synthetic.py synth_faces_mini_train synth_bodies_mini_train

With any of --num-images/--size/--seed the named datasets are custom variants of the builtins
(same name, other spec); a later run with other settings regenerates them.
"""

import argparse
import dataclasses
import json
import logging
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from d2ext.data.synthetic import (  # noqa: E402
    BUILTIN_DATASETS,
    builtin_spec,
    generate,
    register_synthetic,
    synthetic_dataset_dir,
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "names", nargs="*", help=f"datasets (default: all of {sorted(BUILTIN_DATASETS)})"
    )
    p.add_argument(
        "--root", default=None, help="datasets root (default: $DETECTRON2_DATASETS or ./datasets)"
    )
    p.add_argument("--num-images", type=int, default=None, help="images per dataset")
    p.add_argument(
        "--size", type=int, nargs="+", default=None, metavar="PX", help="H [W] of the images"
    )
    p.add_argument("--seed", type=int, default=None, help="RNG seed")
    return p.parse_args(argv)


def _contents(kind: str, out_dir: str) -> str:
    """What a generated dataset holds, in words."""
    if kind == "faces":
        with open(os.path.join(out_dir, "visibility.json")) as f:
            flags = [v for vis in json.load(f).values() for v in vis]
        return (
            f"{len(flags) // 68} faces, 68 landmarks each ({flags.count(1)} occluded, "
            f"{flags.count(0)} outside the image)"
        )
    if kind == "face_scenes":
        with open(os.path.join(out_dir, "label.txt")) as f:
            lines = [line.split() for line in f if line.strip()]
        faces = [f for f in lines if f[0] != "#"]
        missing = sum(len(f) >= 19 and float(f[4]) < 0 for f in faces)
        return (
            f"{len(faces)} faces "
            f"({missing} without landmarks), RetinaFace label.txt + WIDER .mat keep-lists"
        )
    if kind == "videos":
        with open(os.path.join(out_dir, "instances.json")) as f:
            vis = json.load(f)
        frames = sum(v["length"] for v in vis["videos"])
        return f"{frames} frames, {len(vis['annotations'])} tracks (YouTube-VIS json, exact flow)"
    json_name = "person_keypoints.json" if kind == "bodies" else "instances.json"
    with open(os.path.join(out_dir, json_name)) as f:
        anns = json.load(f)["annotations"]
    if kind == "bodies":
        return f"{len(anns)} people"
    return f"{len(anns)} instances ({sum(a['iscrowd'] for a in anns)} crowd)"


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    names = args.names or sorted(BUILTIN_DATASETS)
    unknown = [n for n in names if n not in BUILTIN_DATASETS]
    if unknown:
        print(
            f"unknown synthetic dataset(s) {unknown}; known: {sorted(BUILTIN_DATASETS)}",
            file=sys.stderr,
        )
        return 2
    if args.size is not None and len(args.size) not in (1, 2):
        print("--size takes H or H W", file=sys.stderr)
        return 2
    for name in names:
        spec = builtin_spec(name)
        spec = dataclasses.replace(
            spec,
            num_images=args.num_images if args.num_images is not None else spec.num_images,
            image_size=spec.image_size if args.size is None else (args.size[0], args.size[-1]),
            seed=args.seed if args.seed is not None else spec.seed,
        )
        spec = register_synthetic(name, args.root, spec)
        out_dir = synthetic_dataset_dir(name)
        made = generate(spec, out_dir)
        unit = f"videos of {spec.num_frames} frames" if spec.kind == "videos" else "images"
        print(
            f"{name}: {spec.kind}, {spec.num_images} {unit} of {spec.image_size[0]}x"
            f"{spec.image_size[1]}, {_contents(spec.kind, out_dir)}, seed {spec.seed} -> "
            f"{out_dir} ({'generated' if made else 'already up to date'})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
