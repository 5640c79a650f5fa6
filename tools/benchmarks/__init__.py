"""Benchmark cases run by ``tools/benchmark.py``.

A case is a function ``case(device: str, quick: bool) -> List[BenchRow]`` registered with
:func:`register_benchmark`. Every row times our implementation against an *anchor* (the stock
path: D2, torch, pycocotools, panopticapi...) in the same process, so the ratio is meaningful
on any machine; absolute times are reported for context only.
"""

import importlib
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import torch

BENCHMARKS: Dict[str, Callable[..., List["BenchRow"]]] = {}

# modules holding cases, imported by load_all_cases (each registers its cases on import)
CASE_MODULES = (
    "mask_ops",
    "yolact",
    "yolact_edge",
    "evaluation",
    "heatmap_codec",
    "retinaface",
    "densepose",
    "export",
    "vpsnet",
)


@dataclass
class BenchRow:
    name: str  # what is measured, e.g. "paste 100 masks 28x28 -> 800x1333"
    anchor: str  # what we compare against, e.g. "D2 paste_masks_in_image"
    anchor_s: float  # seconds per call of the anchor (median)
    ours_s: float  # seconds per call of ours (median)
    target: Optional[float] = None  # speed-up this case must reach (docs/benchmarks.md); None: none
    extra: Dict[str, str] = field(default_factory=dict)  # e.g. bandwidth, memory

    @property
    def speedup(self) -> float:
        return self.anchor_s / self.ours_s


def register_benchmark(name: str):
    def deco(fn):
        if name in BENCHMARKS:
            raise KeyError(f"benchmark {name!r} registered twice")
        BENCHMARKS[name] = fn
        return fn

    return deco


def load_all_cases() -> Dict[str, Callable[..., List[BenchRow]]]:
    """Imports every case module and returns the registry, name -> case."""
    for mod in CASE_MODULES:
        importlib.import_module(f"{__name__}.{mod}")
    return BENCHMARKS


def time_fn(
    fn: Callable[[], object], *, warmup: int = 1, iters: int = 5, device: str = "cpu"
) -> float:
    """Median wall time of ``fn()`` in seconds (CUDA synchronised around each call)."""
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(iters):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]
