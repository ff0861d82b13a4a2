"""Tests import the checkout's code, never a test package or another installed copy."""
from pathlib import Path

import model
import pipelines
import serving

REPO = Path(__file__).resolve().parents[1]


def test_source_packages_are_the_checkouts():
    for package in (pipelines, model, serving):
        assert Path(package.__file__).resolve() == REPO / package.__name__ / "__init__.py", package.__file__
