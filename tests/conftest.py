"""Shared pytest setup: small thread counts (2-core CI), a session-wide synthetic-data root."""
import os
import sys

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SHARED = os.path.abspath(os.path.join(REPO, "..", "shared"))


def pytest_configure(config):
    # one dataset cache for the whole session (and its subprocesses), never the user's
    if "D2EXT_TEST_DATASETS" not in os.environ:
        root = os.path.join(REPO, "build", "test-datasets")
        os.makedirs(root, exist_ok=True)
        os.environ["D2EXT_TEST_DATASETS"] = root
    os.environ["DETECTRON2_DATASETS"] = os.environ["D2EXT_TEST_DATASETS"]
    if REPO not in sys.path:
        sys.path.insert(0, REPO)


@pytest.fixture(scope="session")
def repo_root():
    return REPO


@pytest.fixture(scope="session")
def shared_dir():
    return SHARED
