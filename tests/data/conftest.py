"""Fixtures shared by the dataset tests."""

import uuid

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from d2ext.data import datasets as datasets_mod


@pytest.fixture
def new_name():
    """``new_name(prefix)`` -> a unique dataset name, unregistered again after the test."""
    names = []

    def make(prefix="reg"):
        names.append(f"{prefix}_{uuid.uuid4().hex[:8]}")
        return names[-1]

    yield make
    for n in names:
        if n in DatasetCatalog.list():
            DatasetCatalog.remove(n)
        if n in MetadataCatalog.list():
            MetadataCatalog.remove(n)
        datasets_mod._REGISTERED.pop(n, None)
