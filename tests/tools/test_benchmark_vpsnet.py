"""``tools/benchmarks/vpsnet.py``: its cases are registered, and ``vpq_eval`` says how to get the
official eval_vpq.py (not part of this repository) instead of failing somewhere inside."""

import importlib
import os

import pytest


@pytest.fixture
def benchmarks(repo_root, monkeypatch):
    """The ``tools/benchmarks`` package, imported as ``tools/benchmark.py`` imports it."""
    monkeypatch.syspath_prepend(os.path.join(repo_root, "tools"))
    return importlib.import_module("benchmarks")


def test_vpsnet_cases_registered(benchmarks):
    assert {"vpsnet_video", "vpq_eval"} <= set(benchmarks.load_all_cases())


def test_vpq_eval_without_the_official_script(benchmarks, monkeypatch, tmp_path):
    vpsnet = importlib.import_module("benchmarks.vpsnet")
    case = benchmarks.load_all_cases()["vpq_eval"]
    monkeypatch.delenv(vpsnet.OFFICIAL_ENV, raising=False)
    with pytest.raises(RuntimeError, match=f"set {vpsnet.OFFICIAL_ENV} to .*eval_vpq.py"):
        case(device="cpu", quick=True)
    monkeypatch.setenv(vpsnet.OFFICIAL_ENV, str(tmp_path / "eval_vpq.py"))
    with pytest.raises(FileNotFoundError, match=f"{vpsnet.OFFICIAL_ENV}=.* is no file"):
        case(device="cpu", quick=True)
