#!/usr/bin/env python3
"""The wheels the GPU machine lacks, downloaded here where pip reaches PyPI.

    python tools/device_wheels.py .whl    # what `make device-wheels` runs

The GPU machine has Python 3.12 and torch with CUDA but no package registry, so the packages
d2ext needs that it lacks travel as wheels in the git-ignored folder ``.whl/``. They are
downloaded with ``pip download --python-version 3.12`` at the versions of this interpreter's
packages (a pure-Python wheel is built from the sdist where PyPI has none); detectron2 is
sal-detectron2's cp310 wheel, installed there as pure Python, as the Makefile does here.
``tools/device_check.py`` installs them on the GPU machine (and its ``--download-wheels DIR``
runs :func:`download_wheels`).
"""

import argparse
import glob
import os
import re
import subprocess
import sys
from typing import List, Optional

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
WHEELS = os.path.join(REPO, ".whl")

# The packages of requirements.txt that the GPU machine's image lacks (it has torch, torchvision,
# numpy, OpenCV, Pillow, matplotlib, scipy, tqdm, tensorboard, PyYAML, tabulate, cloudpickle,
# portalocker, pytest and pytest-timeout); their own dependencies are in the image too. setuptools
# is carried as requirements.txt pins it (< 81): detectron2.model_zoo imports pkg_resources, which
# newer setuptools no longer has.
DEVICE_PACKAGES = (
    "fvcore", "iopath", "yacs", "termcolor", "omegaconf", "hydra-core", "antlr4-python3-runtime",
    "pycocotools", "panopticapi-lite", "faster-coco-eval", "deflate", "setuptools",
)  # fmt: skip
D2_DIST = "sal-detectron2"
MANYLINUX = ("manylinux_2_28", "manylinux_2_27", "manylinux_2_17", "manylinux2014", "manylinux1")
WHEELS_MAX_MIB = 48  # the working tree and the carried paths travel in 64 MiB together


def dist_name(name: str) -> str:
    """A distribution's normalised name, e.g. sal-detectron2 -> sal_detectron2."""
    return re.sub(r"[-_.]+", "_", name).lower()


def wheel_dist(path: str) -> str:
    """A wheel file's normalised distribution name: hydra_core-1.3.8-...whl -> hydra_core."""
    return dist_name(os.path.basename(path).split("-")[0])


def download_wheels(dest: str, d2_version: str = "") -> int:
    """Fills ``dest`` with one wheel per package the GPU machine lacks, at this interpreter's
    versions, for CPython 3.12 on manylinux x86_64 (sal-detectron2: its cp310 wheel). Returns the
    exit status: 1 when a download or sdist build fails or the set exceeds ``WHEELS_MAX_MIB``."""
    from importlib import metadata

    os.makedirs(dest, exist_ok=True)
    for old in glob.glob(os.path.join(dest, "*.whl")):
        os.remove(old)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    binary = pip + ["download", "--no-deps", "--only-binary=:all:", "-d", dest]
    cp312 = ["--python-version", "3.12", "--implementation", "cp"]
    cp312 += [arg for tag in MANYLINUX for arg in ("--platform", f"{tag}_x86_64")]
    for name in DEVICE_PACKAGES:
        spec = f"{name}=={metadata.version(name)}"
        if subprocess.run(binary + cp312 + [spec]).returncode == 0:
            continue
        print(
            f"{spec}: PyPI has no wheel for CPython 3.12; building one from the sdist", flush=True
        )
        before = set(os.listdir(dest))
        if subprocess.run(
            pip + ["wheel", "--no-deps", "--no-binary", name, "-w", dest, spec]
        ).returncode:
            return 1
        built = sorted(set(os.listdir(dest)) - before)
        if len(built) != 1 or not built[0].endswith("-none-any.whl"):
            print(f"{spec}: expected one pure-Python wheel, got {built}", file=sys.stderr)
            return 1
    d2 = f"{D2_DIST}=={d2_version or metadata.version(D2_DIST)}"
    if subprocess.run(binary + ["--python-version", "3.10", d2]).returncode:
        return 1
    files = sorted(glob.glob(os.path.join(dest, "*.whl")))
    total = sum(os.path.getsize(f) for f in files)
    for f in files:
        print(f"{os.path.getsize(f) / 2**20:7.2f} MiB  {os.path.basename(f)}")
    print(f"{total / 2**20:7.2f} MiB  in {len(files)} wheels in {dest}")
    if total > WHEELS_MAX_MIB * 2**20:
        print(f"more than {WHEELS_MAX_MIB} MiB: the carried tree would not fit", file=sys.stderr)
        return 1
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dest", nargs="?", default=WHEELS, help="folder to fill (default .whl/)")
    parser.add_argument("--d2-version", default="", help="sal-detectron2 version (default: ours)")
    args = parser.parse_args(argv)
    return download_wheels(args.dest, args.d2_version)


if __name__ == "__main__":
    sys.exit(main())
