#!/usr/bin/env python
"""Generate d2ext's synthetic datasets on disk (they are otherwise generated on first use).

    python tools/make_synthetic.py                       # all builtins, in $DETECTRON2_DATASETS
    python tools/make_synthetic.py synth_shapes_val --root /tmp/ds
    python tools/make_synthetic.py synth_panoptic_train --num-images 20 --size 128 160 --seed 7

With any of --num-images/--size/--seed the named datasets are custom variants of the builtins
(same name, other spec); a later run with other settings regenerates them.
"""

import argparse
import json
import logging
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from d2ext.data.synthetic import (  # noqa: E402
    BUILTIN_DATASETS,
    builtin_spec,
    generate,
    register_synthetic_panoptic,
    register_synthetic_shapes,
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
        size = spec.image_size if args.size is None else (args.size[0], args.size[-1])
        register = (
            register_synthetic_shapes if spec.kind == "shapes" else register_synthetic_panoptic
        )
        spec = register(
            name,
            args.root,
            args.num_images if args.num_images is not None else spec.num_images,
            size,
            args.seed if args.seed is not None else spec.seed,
        )
        out_dir = synthetic_dataset_dir(name)
        made = generate(spec, out_dir)
        with open(os.path.join(out_dir, "instances.json")) as f:
            coco = json.load(f)
        crowd = sum(a["iscrowd"] for a in coco["annotations"])
        print(
            f"{name}: {spec.kind}, {len(coco['images'])} images of {spec.image_size[0]}x"
            f"{spec.image_size[1]}, {len(coco['annotations'])} instances ({crowd} crowd), "
            f"seed {spec.seed} -> {out_dir} ({'generated' if made else 'already up to date'})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
