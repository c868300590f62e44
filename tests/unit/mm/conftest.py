"""Fixtures of the multimodal data/training tests: a tiny random LLaVA (tests/fixtures/tiny_llava.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory) -> Path:
    """Folder of a tiny random LLaVA with its processor; every image becomes 4 ``<image>`` tokens."""
    from tests.fixtures.tiny_llava import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("tiny-llava"))


@pytest.fixture(scope="session")
def mllm_dir(reference_dir) -> Path:
    """LLaMA-Factory's data folder holding mllm_demo.json and its images."""
    return reference_dir / "lf" / "data"
