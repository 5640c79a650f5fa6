"""``tools/device_check.py``: the time limits that keep the GPU run inside its 8 minutes, the run
going on past a failed step, the dry run's output folder. (``make test`` runs the whole ``--cpu``
dry run.)"""

import importlib.util
import os
import sys
import time

import pytest


def hang_script(pid_file=None) -> str:
    """Python code that starts a child, optionally writes the child's pid, and sleeps."""
    write_pid = f"open({str(pid_file)!r}, 'w').write(str(child.pid)); " if pid_file else ""
    return (
        "import subprocess, sys, time; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"{write_pid}time.sleep(60)"
    )


@pytest.fixture(scope="module")
def dc(repo_root):
    tools = os.path.join(repo_root, "tools")
    spec = importlib.util.spec_from_file_location(
        "device_check", os.path.join(tools, "device_check.py")
    )
    module = importlib.util.module_from_spec(spec)
    # it imports device_wheels from its own folder, as when it runs as a script
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(tools)
        spec.loader.exec_module(module)
    return module


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def runner(dc, tmp_path, time_limit, step_limit):
    r = dc.Runner(str(tmp_path), time_limit)
    r.step = dc.Step("hang", "hang.log", step_limit)
    r.step_start = time.monotonic()
    return r


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_hanging_command_and_its_children_are_killed_at_the_step_limit(dc, tmp_path):
    r = runner(dc, tmp_path, time_limit=60, step_limit=5)
    pid_file = tmp_path / "child.pid"
    t0 = time.monotonic()
    assert r.run([sys.executable, "-c", hang_script(pid_file)], dict(os.environ)) is None
    assert time.monotonic() - t0 < 15 and r.killed
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(child), "the hanging command's child outlived the step"
    assert "KILLED at the time limit" in (tmp_path / "hang.log").read_text()


def test_the_run_deadline_caps_every_step(dc, tmp_path):
    r = runner(dc, tmp_path, time_limit=dc.RESERVE_S + 1.5, step_limit=300)
    t0 = time.monotonic()
    assert r.run([sys.executable, "-c", hang_script()], dict(os.environ)) is None
    assert time.monotonic() - t0 < 10
    assert (
        r.run([sys.executable, "-c", "pass"], dict(os.environ)) is None
    )  # no time left: not started
    assert "not started: no time left" in (tmp_path / "hang.log").read_text()


def test_a_failed_step_does_not_stop_the_later_ones(dc, tmp_path, monkeypatch):
    def passes(r, cpu, env, state):
        r.write("ok")
        return "passed"

    def raises(r, cpu, env, state):
        raise RuntimeError("broken step")

    def hangs(r, cpu, env, state):
        return "passed" if r.run([sys.executable, "-c", hang_script()], env) == 0 else "failed"

    steps = [
        ("a", "a.log", passes),
        ("b", "b.log", raises),
        ("c", "c.log", hangs),
        ("d", "d.log", passes),
    ]
    monkeypatch.setattr(dc, "STEPS", steps)
    monkeypatch.setitem(dc.LIMITS, "cpu", {"a": 10, "b": 10, "c": 2, "d": 10})
    out = tmp_path / "out"
    assert dc.check(True, str(out), 60, ["--cpu"]) == 1
    summary = (out / "summary.md").read_text()
    assert "| a | passed |" in summary and "| d | passed |" in summary
    assert "| b | failed |" in summary and "RuntimeError: broken step" in summary
    assert "| c | failed |" in summary and "killed at its time limit" in summary


def test_two_versions_of_a_wheel_stop_the_install(dc, tmp_path, monkeypatch):
    for name in (
        "yacs-0.1.8-py3-none-any.whl",
        "yacs-0.1.7-py3-none-any.whl",
        "fvcore-0.1.5-py3-none-any.whl",
    ):
        (tmp_path / name).write_bytes(b"")
    monkeypatch.setattr(dc, "WHEELS", str(tmp_path))
    r = runner(dc, tmp_path, time_limit=60, step_limit=10)
    assert dc.step_wheels(r, False, dict(os.environ), {}) == "failed"
    assert r.step.note == "two versions of ['yacs'] in .whl/"


def test_the_gpu_run_ends_within_8_minutes_and_the_dry_run_within_10(dc):
    assert dc.DEADLINE["gpu"] < 8 * 60
    assert dc.DEADLINE["cpu"] <= 10 * 60
    assert set(dc.LIMITS["gpu"]) == set(dc.LIMITS["cpu"]) == {name for name, _, _ in dc.STEPS}
    # each --cpu step may take longer than its GPU twin: CI machines are small and loaded
    assert all(dc.LIMITS["cpu"][k] >= dc.LIMITS["gpu"][k] for k in ("tests", "benchmarks"))


def test_the_dry_run_writes_to_one_folder_emptied_first(dc, tmp_path, monkeypatch):
    out = tmp_path / "dry-run-out"
    out.mkdir()
    (out / "pytest.log").write_text("a log of the previous dry run\n")
    seen = {}

    def check(cpu, folder, time_limit, argv):
        stale = os.path.exists(os.path.join(folder, "pytest.log"))
        seen.update(cpu=cpu, folder=folder, time_limit=time_limit, stale=stale)
        return 0

    monkeypatch.setattr(dc, "DRY_RUN_OUT", str(out))
    monkeypatch.setattr(dc, "check", check)
    assert dc.main(["--cpu"]) == 0
    assert seen == dict(cpu=True, folder=str(out), time_limit=dc.DEADLINE["cpu"], stale=False)


def test_download_wheels_is_reachable_from_device_check(dc, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(dc, "download_wheels", lambda dest, version: calls.append((dest, version)))
    dc.main(["--download-wheels", str(tmp_path), "--d2-version", "0.7.2"])
    assert calls == [(str(tmp_path), "0.7.2")]
