"""Running the repo's tools in a subprocess, as a user would (shared by the end-to-end tests;
importable from any test: pytest puts ``tests/`` on ``sys.path`` for its root conftest)."""

import os
import subprocess

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

# the smallest training that still runs every stage: 2 iterations of batch 2, no loader workers
TWO_ITERATIONS = [
    "SOLVER.MAX_ITER",
    "2",
    "SOLVER.IMS_PER_BATCH",
    "2",
    "DATALOADER.NUM_WORKERS",
    "0",
]


def run_in_repo(cmd, tmp_path, timeout: int = 600) -> str:
    """Runs ``cmd`` from the repo root with one thread and returns stdout + stderr (also saved
    to ``tmp_path/log.txt``); fails the test, showing the log's end, on a non-zero exit."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    log = proc.stdout + proc.stderr
    (tmp_path / "log.txt").write_text(log)
    assert proc.returncode == 0, log[-6000:]
    return log
