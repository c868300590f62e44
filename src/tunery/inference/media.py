"""Images, videos and audio in conversations: where they come from and how they reach the model.

A message may carry ``"images"``, ``"videos"`` and/or ``"audios"`` lists beside its text
(LLaMA-Factory's layout); each ``<image>``/``<video>``/``<audio>`` in the text marks where one goes,
in order (no marker: the media come before the text). A reference is a local path (relative to
``media_dir`` when the file is there, else to the working folder), a ``file://`` URL or a
``data:<type>;base64,...`` URL; a video may also be a folder of frame images (read in name order)
or a list of frame paths. A remote ``http(s)://`` URL is refused (Tunery runs offline): a
ConfigError, which the API answers with 400.

This module only turns such a conversation into the record training uses
(``{"messages": [...], "images": [...], ...}``, see :func:`media_record`); loading the files and
encoding them (``image_max_pixels``, ``video_fps``, ``audio_sampling_rate``, the processor's token
expansion) is ``tunery.data.media``'s, the same code as in training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from tunery.data.media import IMAGE_SUFFIXES, KINDS, PLACEHOLDERS, SINGULAR
from tunery.errors import ConfigError

IMAGE_PLACEHOLDER = PLACEHOLDERS["images"]


def has_media(messages: list[dict]) -> bool:
    """True when any message carries images, videos or audios."""
    return any(message.get(kind) for message in messages for kind in KINDS)


def media_kinds(messages: list[dict]) -> list[str]:
    """The media kinds (``images``, ``videos``, ``audios``) the conversation carries, in that order."""
    return [kind for kind in KINDS if any(message.get(kind) for message in messages)]


def resolve_ref(ref: Any, kind: str = "images", media_dir: str | Path | None = None) -> str:
    """A media reference as ``tunery.data.media``'s loaders read it: a local path, a ``data:`` URL,
    or (a video given as frames) the JSON list of its frame paths.

    Raises ConfigError for a remote URL, a malformed data URL or a file that does not exist.
    """
    singular = SINGULAR[kind]
    if kind == "videos" and isinstance(ref, str) and ref.startswith("["):  # a dataset's frame list (its JSON)
        try:
            ref = json.loads(ref)
        except json.JSONDecodeError:
            pass
    if kind == "videos" and isinstance(ref, (list, tuple)):  # a video as a list of frame files
        return json.dumps([resolve_ref(frame, "images", media_dir) for frame in ref])
    if not isinstance(ref, str) or not ref.strip():
        raise ConfigError(f"an {singular} must be a path or a URL, got {type(ref).__name__}")
    ref = ref.strip()
    if ref.startswith(("http://", "https://")):
        raise ConfigError(f"cannot fetch the remote {singular} {ref[:80]}: Tunery runs offline",
                          hint=f"send the {singular} inline as a data: URL (base64) or give a local file path")
    if ref.startswith("data:"):
        header, _, payload = ref.partition(",")
        if ";base64" not in header or not payload:
            raise ConfigError(f"an {singular} data URL must be data:<type>;base64,<data> (base64 payload)")
        return ref
    path = Path(unquote(urlparse(ref).path)) if ref.startswith("file://") else Path(ref).expanduser()
    if not path.is_absolute() and media_dir is not None and (Path(media_dir) / path).exists():
        path = Path(media_dir) / path  # relative to media_dir first, then to the working folder
    if kind == "videos" and path.is_dir():
        frames = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not frames:
            raise ConfigError(f"the video folder {path} holds no frame images ({', '.join(IMAGE_SUFFIXES)})")
        return json.dumps([str(p) for p in frames])
    if not path.is_file():
        raise ConfigError(f"{singular} file not found: {path}")
    return str(path)


def media_record(messages: list[dict], media_dir: str | Path | None = None) -> dict[str, Any]:
    """The conversation as a training record: ``{"messages": [{"role", "content"}], "images": [...],
    "videos": [...], "audios": [...]}`` with one placeholder per item, in order, and references resolved.

    A message's media without a marker get one at the start of its text. Raises ConfigError when a
    message has more markers of a kind than items of it, or the conversation's markers and items
    of a kind differ in number (a marker in a message without media).
    """
    record: dict[str, Any] = {"messages": [], **{kind: [] for kind in KINDS}}
    for index, message in enumerate(messages):
        text = str(message.get("content") or "")
        lead = ""
        for kind in KINDS:
            items = list(message.get(kind) or ())
            markers = text.count(PLACEHOLDERS[kind])
            if items and markers > len(items):
                raise ConfigError(f"message {index} has {markers} {PLACEHOLDERS[kind]} markers but "
                                  f"{len(items)} {kind}")
            if items:
                lead += PLACEHOLDERS[kind] * (len(items) - markers)
            record[kind] += [resolve_ref(item, kind, media_dir) for item in items]
        record["messages"].append({"role": message["role"], "content": lead + text})
    texts = [m["content"] for m in record["messages"]]
    for kind in KINDS:
        markers = sum(t.count(PLACEHOLDERS[kind]) for t in texts)
        if markers != len(record[kind]):
            raise ConfigError(f"the conversation has {markers} {PLACEHOLDERS[kind]} markers but "
                              f"{len(record[kind])} {kind}", hint=f"attach one {SINGULAR[kind]} per marker")
    return record


def attach_record_media(messages: list[dict], record: dict[str, Any]) -> list[dict]:
    """A dataset record's ``images``/``videos``/``audios`` (LLaMA-Factory: one per marker, in order over
    the conversation) given to the messages whose markers they fill; items beyond the markers go to
    the first user message."""
    out = [dict(message) for message in messages]
    for kind in KINDS:
        remaining = list(record.get(kind) or [])
        if not remaining:
            continue
        for message in out:
            count = min(str(message.get("content") or "").count(PLACEHOLDERS[kind]), len(remaining))
            if count:
                message[kind], remaining = remaining[:count], remaining[count:]
        if remaining:
            first = next((i for i, m in enumerate(out) if m.get("role") == "user"), 0)
            out[first] = {**out[first], kind: remaining + list(out[first].get(kind) or [])}
    return out

