#!/usr/bin/env python3
"""The prepared GPU check: one command that installs the carried wheels, builds ``d2ext._C`` with
CUDA, runs the CUDA tests and the GPU benchmarks, and writes every log under ``$OUT``.

    make device-wheels                    # here, with a registry: .whl/ <- what the GPU lacks
    make device-check                     # on the GPU machine: python3 tools/device_check.py
    python3 tools/device_check.py --cpu   # the same steps as a dry run on CPU (make test)

The GPU machine has Python 3.12 and torch with CUDA but no package registry, so the packages
d2ext needs that it lacks travel as wheels in the ignored folder ``.whl/``, which
``tools/device_wheels.py`` fills here (also reachable as ``--download-wheels DIR``).

Steps: env (nvidia-smi, nvcc, packages), wheels (install into ``build/device-check/``, import
check), build (``FORCE_CUDA=1 setup.py build_ext --inplace`` for the device's architecture), tests
(``pytest -m cuda tests``), benchmarks (``tools/benchmark.py --device cuda``). Each step has a time
limit and the whole run a deadline (``--time-limit``), enforced by killing the step's process
group, so the command ends in time even when a step hangs; a failed step does not stop the
later ones. ``--cpu`` installs the wheels (if any) for Python 3.12 into a scratch folder without
using them, checks the imports of this interpreter, does not build (``make build`` did; the
CUDA build command is logged), runs the same pytest command (the CUDA tests skip) and a quick
benchmark subset on CPU.

Files in ``--out`` (default ``$OUT``; for ``--cpu`` ``build/device-check/dry-run-out``, emptied
at the start of each dry run): summary.md, env.txt, wheels.log, build.log, pytest.log,
pytest.xml, benchmark.log, benchmark.md. Exit status 0 iff every step passed.
"""

import argparse
import datetime
import glob
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Optional
from xml.etree import ElementTree

# tools/device_wheels.py, next to this script (on sys.path when this file runs as a script)
from device_wheels import D2_DIST, WHEELS, dist_name, download_wheels, wheel_dist

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
WORK = os.path.join(REPO, "build", "device-check")  # install targets (git-ignored)
DRY_RUN_OUT = os.path.join(WORK, "dry-run-out")  # the --cpu run's files, replaced by each run

# imported after the install: d2ext, D2 and the tests need each of them
MODULES = (
    "torch", "torchvision", "numpy", "detectron2", "fvcore", "iopath", "yacs", "omegaconf",
    "hydra", "pycocotools", "panopticapi", "faster_coco_eval", "deflate", "termcolor", "tabulate",
    "cloudpickle", "cv2", "PIL", "matplotlib", "scipy", "pytest", "pytest_timeout",
    "detectron2.model_zoo", "d2ext",
)  # fmt: skip
GPU_CASES = ("mask_assembly", "paste_masks", "yolact_e2e", "yolact_fast_nms")
CPU_CASES = ("mask_assembly", "paste_masks", "yolact_fast_nms")
# seconds per step, all capped by the run's deadline (--time-limit). The GPU run must end within 8
# minutes; the --cpu run, part of `make test` on small loaded CI machines, gets many times what it
# needs (40 s in all on an idle 2-core machine), so a slow step is not taken for a hang.
LIMITS = {
    "gpu": {"env": 40, "wheels": 90, "build": 240, "tests": 150, "benchmarks": 180},
    "cpu": {"env": 120, "wheels": 240, "build": 60, "tests": 300, "benchmarks": 300},
}
DEADLINE = {"gpu": 460, "cpu": 600}
RESERVE_S = 5  # kept back from the deadline for the summary

PROBE = r"""
import importlib, json, sys
info = {"python": sys.version.split()[0], "modules": {}, "missing": {}}
for name in sys.argv[1:]:
    try:
        info["modules"][name] = str(getattr(importlib.import_module(name), "__version__", "-"))
    except Exception as e:
        info["missing"][name] = f"{type(e).__name__}: {e}"
torch = sys.modules.get("torch")  # imported above unless missing
if torch:
    info.update(torch=torch.__version__, torch_cuda=torch.version.cuda, gpu=torch.cuda.is_available())
if info.get("gpu"):
    p = torch.cuda.get_device_properties(0)
    info.update(device=p.name, capability=f"{p.major}.{p.minor}", sms=p.multi_processor_count,
                memory_gib=round(p.total_memory / 2**30, 1), cudnn=torch.backends.cudnn.version())
print("PROBE " + json.dumps(info))
"""
# loads the library built for this interpreter by its path (importing torch only: quick) and asks
# it whether it holds the CUDA kernels
VERIFY_BUILD = r"""
import importlib.machinery, json, torch
lib = "d2ext/_C" + importlib.machinery.EXTENSION_SUFFIXES[0]
torch.ops.load_library(lib)
print("BUILD " + json.dumps({"library": lib, "cuda": torch.ops.d2ext.built_with_cuda()}))
"""
TABLE_HEAD = "| case | measured | anchor | anchor ms | ours ms | speed-up | target | extra |\n"
TABLE_HEAD += "|---|---|---|---:|---:|---:|---:|---|\n"


@dataclass
class Step:
    name: str
    log: str  # file name in the output folder
    limit: float  # seconds
    status: str = "not run"
    seconds: float = 0.0
    note: str = ""


class Runner:
    """Runs commands for the current step, output appended to its log, killed at its time limit."""

    def __init__(self, out: str, time_limit: float):
        self.out = out
        self.start = time.monotonic()
        self.deadline = self.start + time_limit - RESERVE_S
        self.step: Optional[Step] = None
        self.step_start = self.start
        self.killed = False  # a command of the current step hit its time limit

    def path(self, name: str) -> str:
        return os.path.join(self.out, name)

    def write(self, text: str, log: Optional[str] = None) -> None:
        with open(self.path(log or self.step.log), "a") as f:
            f.write(text if text.endswith("\n") else text + "\n")

    def time_left(self) -> float:
        step_end = self.step_start + self.step.limit
        return min(step_end, self.deadline) - time.monotonic()

    def run(self, cmd: List[str], env: Dict[str, str], cwd: str = REPO) -> Optional[int]:
        """The exit status, or None when it was killed at the step's time limit."""
        limit = self.time_left()
        self.write(f"$ {shlex.join(cmd)}    # time left {limit:.0f} s")
        if limit < 0.5:
            self.write("not started: no time left")
            return None
        t0 = time.monotonic()
        with open(self.path(self.step.log), "a") as log:
            proc = subprocess.Popen(
                cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
            try:
                rc = proc.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                kill_group(proc)
                rc, self.killed = None, True
        took = time.monotonic() - t0
        ended = f"exit {rc} after" if rc is not None else "KILLED at the time limit,"
        self.write(f"[{ended} {took:.1f} s]")
        return rc

    def tagged_json(self, tag: str) -> Optional[dict]:
        """The JSON printed after ``tag`` on the last such line of the step's log."""
        with open(self.path(self.step.log)) as f:
            lines = [line for line in f if line.startswith(tag + " ")]
        return json.loads(lines[-1][len(tag) + 1 :]) if lines else None


def kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the whole process group (a build's compilers too), SIGKILL to what remains."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    proc.wait()


def find_cuda_home() -> Optional[str]:
    """$CUDA_HOME, else the first toolkit with nvcc and the runtime headers: nvcc's on PATH (a
    wrapper script there is not a toolkit), /usr/local/cuda, the newest /usr/local/cuda-*."""
    if os.environ.get("CUDA_HOME"):
        return os.environ["CUDA_HOME"]
    nvcc = shutil.which("nvcc")
    homes = [os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))] if nvcc else []
    homes += ["/usr/local/cuda"] + sorted(glob.glob("/usr/local/cuda-*"), reverse=True)
    for home in homes:
        if all(
            os.path.exists(os.path.join(home, f)) for f in ("bin/nvcc", "include/cuda_runtime.h")
        ):
            return home
    return None


# ----------------------------------------------------------------------------- steps
# Each step: (runner, cpu, env, state) -> "passed" | "failed"; env holds the variables of the
# later steps' commands (the wheels step adds PYTHONPATH), state what a step found out.
PY = sys.executable
PIP_INSTALL = [PY, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile"]
PIP_INSTALL += ["--no-cache-dir", "--disable-pip-version-check"]


def step_env(r: Runner, cpu: bool, env: Dict[str, str], state: dict) -> str:
    now = datetime.datetime.now(datetime.timezone.utc)
    r.write(f"date: {now:%Y-%m-%d %H:%M} UTC\nhost: {platform.node()} {platform.platform()}")
    r.write(f"python: {PY} {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    cuda_home = find_cuda_home()
    nvcc = os.path.join(cuda_home, "bin", "nvcc") if cuda_home else "nvcc"
    for exe, args in ((shutil.which("nvidia-smi") or "nvidia-smi", []), (nvcc, ["--version"])):
        if os.path.exists(exe):
            r.run([exe, *args], env)
        else:
            r.write(f"{exe}: not found")
    rc = r.run([PY, "-m", "pip", "list", "--format=freeze"], env)
    return "passed" if rc == 0 else "failed"


def step_wheels(r: Runner, cpu: bool, env: Dict[str, str], state: dict) -> str:
    wheels = sorted(glob.glob(os.path.join(WHEELS, "*.whl")))
    if not wheels and not cpu:
        r.step.note = "no wheels in .whl/: run `make device-wheels` where pip reaches PyPI"
        return "failed"
    dists = [wheel_dist(w) for w in wheels]
    twice = sorted({d for d in dists if dists.count(d) > 1})
    if twice:
        r.step.note = f"two versions of {twice} in .whl/"
        return "failed"
    d2 = [w for w, d in zip(wheels, dists) if d == dist_name(D2_DIST)]
    deps = [w for w, d in zip(wheels, dists) if d != dist_name(D2_DIST)]
    # --cpu: the set must install for the GPU machine's Python; it is then not used here
    prefix = "dry-run-" if cpu else ""
    site, d2_dir = os.path.join(WORK, prefix + "site"), os.path.join(WORK, prefix + "d2")
    for target, files, python in ((site, deps, "3.12" if cpu else ""), (d2_dir, d2, "3.10")):
        shutil.rmtree(target, ignore_errors=True)
        cross = ["--only-binary=:all:", "--python-version", python] if python else []
        if files and r.run(PIP_INSTALL + cross + ["--target", target] + files, env) != 0:
            r.step.note = f"pip install into {target} failed"
            return "failed"
    if os.path.isdir(os.path.join(d2_dir, "tools")):  # D2's scripts package must not shadow ours
        shutil.rmtree(d2_dir + "-tools", ignore_errors=True)
        os.rename(os.path.join(d2_dir, "tools"), d2_dir + "-tools")
    paths = [REPO] if cpu else [REPO, d2_dir, site]
    paths += [env["PYTHONPATH"]] if env.get("PYTHONPATH") else []
    env["PYTHONPATH"] = os.pathsep.join(paths)
    r.write(f"PYTHONPATH={env['PYTHONPATH']}")
    r.run([PY, "-c", PROBE, *MODULES], env)
    probe = state["probe"] = r.tagged_json("PROBE")
    if probe is None:
        r.step.note = "the import check crashed"
        return "failed"
    r.write(json.dumps(probe, indent=1), log="env.txt")
    r.step.note = f"{len(wheels)} wheels{' (--cpu: installed, unused)' if cpu and wheels else ''}"
    r.step.note += f", {len(probe['modules'])} of {len(MODULES)} modules import"
    if probe["missing"]:
        r.step.note += "; missing: " + ", ".join(probe["missing"])
    return "failed" if probe["missing"] else "passed"


def step_build(r: Runner, cpu: bool, env: Dict[str, str], state: dict) -> str:
    probe = state.get("probe") or {}
    arch = os.environ.get("TORCH_CUDA_ARCH_LIST") or probe.get("capability") or "9.0"
    build_env = dict(env, FORCE_CUDA="1", TORCH_CUDA_ARCH_LIST=arch, MAX_JOBS=str(os.cpu_count()))
    cuda_home = find_cuda_home()
    if cuda_home:
        build_env["CUDA_HOME"] = cuda_home
        build_env["PATH"] = os.path.join(cuda_home, "bin") + os.pathsep + env.get("PATH", "")
    cmd = [PY, "setup.py", "build_ext", "--inplace"]
    r.write(f"CUDA_HOME={cuda_home} TORCH_CUDA_ARCH_LIST={arch} MAX_JOBS={os.cpu_count()}")
    if cpu:
        r.write(f"--cpu: no build (the GPU run builds: FORCE_CUDA=1 {shlex.join(cmd)})")
    elif not probe.get("gpu"):
        r.step.note = "torch sees no CUDA device"
        return "failed"
    elif r.run(cmd, build_env) != 0:
        return "failed"
    r.run([PY, "-c", VERIFY_BUILD], env)
    built = r.tagged_json("BUILD") or {}
    r.step.note = f"{built.get('library')}, CUDA kernels {built.get('cuda')}, arch {arch}"
    return "passed" if built and (cpu or built["cuda"]) else "failed"


def step_tests(r: Runner, cpu: bool, env: Dict[str, str], state: dict) -> str:
    xml = r.path("pytest.xml")
    cmd = [PY, "-m", "pytest", "-m", "cuda", "tests", "-v", "-rs", "-p", "no:cacheprovider"]
    rc = r.run(cmd + ["--continue-on-collection-errors", f"--junitxml={xml}"], env)
    if not os.path.exists(xml):
        r.step.note = "pytest wrote no report (see pytest.log)"
        return "failed"
    suites = list(ElementTree.parse(xml).getroot().iter("testsuite"))
    kinds = ("tests", "failures", "errors", "skipped")
    n = {k: sum(int(s.get(k, 0)) for s in suites) for k in kinds}
    passed = n["tests"] - n["failures"] - n["errors"] - n["skipped"]
    r.step.note = f"{n['tests']} CUDA tests: {passed} passed, {n['failures']} failed, "
    r.step.note += f"{n['errors']} errors, {n['skipped']} skipped"
    # on the GPU every CUDA test must run; on CPU they are collected and skip
    return "passed" if rc == 0 and n["tests"] and (cpu or not n["skipped"]) else "failed"


def step_benchmarks(r: Runner, cpu: bool, env: Dict[str, str], state: dict) -> str:
    table = r.path("benchmark.md")
    cases = CPU_CASES if cpu else GPU_CASES
    cmd = [PY, "tools/benchmark.py", *cases, "--device", "cpu" if cpu else "cuda"]
    rc = r.run(cmd + (["--quick"] if cpu else []) + ["--markdown", table], env)
    if not os.path.exists(table):  # stopped early: keep the rows printed so far
        with open(r.path(r.step.log)) as f:
            rows = [line for line in f if line.startswith("| ")]
        with open(table, "w") as f:
            f.write(f"{shlex.join(cmd)} stopped early: the rows of the cases that finished\n\n")
            f.write(TABLE_HEAD + "".join(rows))
    with open(table) as f:
        rows = [line for line in f if line.startswith("| ") and line not in TABLE_HEAD]
    r.step.note = f"{len(rows)} rows"
    return "passed" if rc == 0 else "failed"


STEPS = (
    ("env", "env.txt", step_env),
    ("wheels", "wheels.log", step_wheels),
    ("build", "build.log", step_build),
    ("tests", "pytest.log", step_tests),
    ("benchmarks", "benchmark.log", step_benchmarks),
)


def summary(r: Runner, steps: List[Step], cpu: bool, state: dict, argv: List[str]) -> str:
    probe = state.get("probe") or {}
    device = f"{probe.get('device')} (sm {probe.get('capability')}, {probe.get('sms')} SMs, {probe.get('memory_gib')} GiB)"
    lines = [
        f"# d2ext device check: {'CPU dry run' if cpu else 'GPU run'}",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, host {platform.node()}",
        f"- command: `python3 tools/device_check.py {shlex.join(argv)}`",
        f"- python {probe.get('python')}, torch {probe.get('torch')} (CUDA {probe.get('torch_cuda')}), "
        f"device: {device if probe.get('gpu') else 'no GPU'}",
        f"- total {time.monotonic() - r.start:.0f} s (limit {r.deadline + RESERVE_S - r.start:.0f} s)",
        "",
        "| step | status | seconds | limit | log | note |",
        "|---|---|---:|---:|---|---|",
    ]
    lines += [
        f"| {s.name} | {s.status} | {s.seconds:.0f} | {s.limit:.0f} | {s.log} | {s.note} |"
        for s in steps
    ]
    table = r.path("benchmark.md")
    if os.path.exists(table):
        with open(table) as f:
            lines += ["", "## Benchmarks", "", f.read().rstrip()]
    return "\n".join(lines) + "\n"


def check(cpu: bool, out: str, time_limit: float, argv: List[str]) -> int:
    os.makedirs(out, exist_ok=True)
    os.makedirs(WORK, exist_ok=True)
    r = Runner(out, time_limit)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.setdefault("DETECTRON2_DATASETS", os.path.join(WORK, "datasets"))
    state: dict = {}
    steps = []
    for name, log, fn in STEPS:
        r.step = step = Step(name, log, LIMITS["cpu" if cpu else "gpu"][name])
        steps.append(step)
        r.step_start, r.killed = time.monotonic(), False
        print(
            f"[device_check] {name} (limit {min(step.limit, r.deadline - r.step_start):.0f} s, log {log})",
            flush=True,
        )
        try:
            step.status = fn(r, cpu, env, state)
        except Exception as e:  # a broken step is reported; the later ones still run
            step.status, step.note = "failed", f"{type(e).__name__}: {e}"
            r.write(f"device_check error: {step.note}")
        step.seconds = time.monotonic() - r.step_start
        if r.killed:
            step.note = (step.note + "; " if step.note else "") + "killed at its time limit"
    text = summary(r, steps, cpu, state, argv)
    with open(r.path("summary.md"), "w") as f:
        f.write(text)
    print("\n" + text + f"\n(files in {out})", flush=True)
    return 0 if all(s.status == "passed" for s in steps) else 1


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cpu", action="store_true", help="dry run of the same steps on CPU")
    parser.add_argument("--out", default="", help=f"output folder ($OUT; --cpu: {DRY_RUN_OUT})")
    parser.add_argument("--time-limit", type=float, default=0, help="seconds for the whole run")
    parser.add_argument("--download-wheels", metavar="DIR", help="fill DIR with the wheels, exit")
    parser.add_argument("--d2-version", default="", help="sal-detectron2 version (default: ours)")
    args = parser.parse_args(argv)
    if args.download_wheels:
        return download_wheels(args.download_wheels, args.d2_version)
    out = args.out or ("" if args.cpu else os.environ.get("OUT", ""))
    if args.cpu and not out:  # logs are appended to: start from an empty folder
        shutil.rmtree(DRY_RUN_OUT, ignore_errors=True)
        out = DRY_RUN_OUT
    if not out:
        parser.error("no output folder: set $OUT or pass --out")
    time_limit = args.time_limit or DEADLINE["cpu" if args.cpu else "gpu"]
    return check(args.cpu, os.path.abspath(out), time_limit, argv)


if __name__ == "__main__":
    sys.exit(main())
