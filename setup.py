#!/usr/bin/env python
"""Build d2ext and its compiled ops (``d2ext._C``).

C++ ops are always built.  CUDA ops are added when a CUDA device is visible or
``FORCE_CUDA=1`` (then ``CUDA_HOME`` must point at an nvcc matching torch's CUDA).
``TORCH_CUDA_ARCH_LIST`` picks the GPU architectures, as for any torch extension.
"""

import glob
import os
import runpy

import torch
from setuptools import find_packages, setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))
# the version's one home, read without importing d2ext (which imports detectron2 and d2ext._C)
VERSION = runpy.run_path(os.path.join(ROOT, "d2ext", "version.py"))["__version__"]


def _want_cuda() -> bool:
    if os.environ.get("FORCE_CUDA", "0") == "1":
        return True
    return torch.cuda.is_available() and CUDA_HOME is not None


def get_extensions():
    csrc = os.path.join(ROOT, "csrc")
    sources = glob.glob(os.path.join(csrc, "*.cpp")) + glob.glob(os.path.join(csrc, "**", "*.cpp"))
    cuda_sources = glob.glob(os.path.join(csrc, "**", "*.cu"))
    extra_compile_args = {"cxx": ["-O3", "-std=c++20"]}
    define_macros = []
    ext_cls = CppExtension
    if _want_cuda():
        if CUDA_HOME is None:
            raise RuntimeError("FORCE_CUDA=1 but CUDA_HOME is not set and nvcc was not found")
        ext_cls = CUDAExtension
        sources += cuda_sources
        define_macros.append(("WITH_CUDA", None))
        extra_compile_args["nvcc"] = [
            "-O3",
            "-std=c++20",
            "--expt-relaxed-constexpr",
            "-D__CUDA_NO_HALF_OPERATORS__",
            "-D__CUDA_NO_HALF_CONVERSIONS__",
            "-D__CUDA_NO_HALF2_OPERATORS__",
        ]
    # relative paths keep the build reproducible and the egg-link editable install happy
    sources = [os.path.relpath(s, ROOT) for s in sorted(set(sources))]
    return [
        ext_cls(
            "d2ext._C",
            sources,
            include_dirs=[csrc],
            define_macros=define_macros,
            extra_compile_args=extra_compile_args,
        )
    ]


setup(
    name="d2ext",
    version=VERSION,
    description="Detectron2 extension: YOLACT, UPSNet, fused mask paste for stock Mask R-CNN / "
    "Panoptic FPN, fast COCO and panoptic (PQ) evaluation, synthetic COCO datasets, Stacked "
    "Hourglass backbone and heatmap codec",
    packages=find_packages(exclude=("tests", "tests.*", "tools", "configs")),
    python_requires=">=3.9",
    # torch/torchvision/detectron2 are deliberately not listed: they come from the user's CUDA
    # stack or from `make` (see README); pip must never replace them.
    install_requires=[
        "fvcore",
        "pycocotools",
        "panopticapi-lite",
        "faster-coco-eval",
        "deflate",
        "opencv-python",
    ],
    # tools/export_model.py --format onnx and ExportedPredictor on .onnx files
    extras_require={"export": ["onnx", "onnxruntime"]},
    ext_modules=get_extensions(),
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    zip_safe=False,
)
