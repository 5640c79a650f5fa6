"""Shared pytest setup: a session-wide synthetic-data root, the ``../shared`` fixtures."""

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


def shared_path(*parts: str) -> str:
    """Path of ``../shared/<parts>`` (the parity fixtures and real samples beside the repo).

    When it is missing the calling test is skipped locally, but fails under ``CI=true``: CI
    always has ``../shared``, so a missing fixture there is a broken set-up, not a skip.
    """
    path = os.path.join(SHARED, *parts)
    if not os.path.exists(path):
        msg = f"shared data missing: {path}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg + " (CI=true: ../shared must be present)")
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def require_shared():
    """``require_shared("fixtures", "yolact")`` -> the path, or skip (fail under ``CI=true``)."""
    return shared_path
