"""make setup pins torch with a matching torchvision (docs/multimodal.md "Dependencies")."""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO


def _dry_setup(tmp_path, *extra: str) -> str:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    result = subprocess.run(["make", "-n", "setup", f"VENV={tmp_path / 'venv'}", f"PY={sys.executable}", *extra],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.skipif(platform.machine() != "x86_64" or sys.version_info[:2] != (3, 11) or shutil.which("nvidia-smi"),
                    reason="the pair is chosen for CPU-only x86_64 with Python 3.11")
def test_setup_installs_the_torch_torchvision_pair_in_one_call(tmp_path):
    lines = [line for line in _dry_setup(tmp_path).splitlines() if "pip install" in line and '"torch' in line]
    assert lines and all('"torch==2.14.1" "torchvision==0.29.1"' in line for line in lines)
    assert any("-e \".[" in line for line in lines)  # the project is installed in the same pinned call


def test_text_only_fallback(tmp_path):
    lines = [line for line in _dry_setup(tmp_path, "TORCH_SPEC=torch==2.13.0").splitlines() if '"torch' in line]
    assert lines and all('"torch==2.13.0"' in line and "torchvision" not in line for line in lines)
