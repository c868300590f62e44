"""Images in conversations: where they come from and how they reach a multimodal model's processor.

A message may carry ``"images": [ref, ...]`` beside its text (LLaMA-Factory's layout); each ``<image>``
in the text marks where one goes, in order (no marker: the images come before the text). A ref
is a local path (relative to ``media_dir`` when the file is there, else to the working folder), a ``file://`` URL, a ``data:image/...;base64``
URL or an already opened PIL image. A remote ``http(s)://`` URL is refused (Tunery runs offline):
a ConfigError, which the API answers with 400.

``processor_messages`` turns such a conversation into the content-parts form that
``processor.apply_chat_template`` renders (``{"type": "image", "image": PIL}`` and text parts).
"""

from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from tunery.errors import ConfigError

IMAGE_PLACEHOLDER = "<image>"


def has_media(messages: list[dict]) -> bool:
    """True when any message carries images."""
    return any(message.get("images") for message in messages)


def load_image(ref: Any, media_dir: str | Path | None = None) -> Any:
    """One image as an RGB PIL image, from a path, ``file://`` URL, ``data:`` URL or PIL image.

    Raises ConfigError for a remote URL, a missing or unreadable file, or a malformed data URL.
    """
    from PIL import Image, UnidentifiedImageError

    if isinstance(ref, Image.Image):
        return ref.convert("RGB")
    if not isinstance(ref, str) or not ref.strip():
        raise ConfigError(f"an image must be a path or a URL, got {type(ref).__name__}")
    ref = ref.strip()
    if ref.startswith(("http://", "https://")):
        raise ConfigError(f"cannot fetch the remote image {ref[:80]}: Tunery runs offline",
                          hint="send the image inline as a data: URL (base64) or give a local file path")
    if ref.startswith("data:"):
        header, _, payload = ref.partition(",")
        if ";base64" not in header or not payload:
            raise ConfigError("an image data URL must be data:image/...;base64,<data>")
        try:
            data = base64.b64decode(payload, validate=False)
        except (binascii.Error, ValueError) as exc:
            raise ConfigError(f"the image data URL is not valid base64: {exc}") from exc
        source: Any = io.BytesIO(data)
        where = "the image data URL"
    else:
        path = Path(unquote(urlparse(ref).path)) if ref.startswith("file://") else Path(ref).expanduser()
        if not path.is_absolute() and media_dir is not None and (Path(media_dir) / path).is_file():
            path = Path(media_dir) / path  # relative to media_dir first, then to the working folder
        if not path.is_file():
            raise ConfigError(f"image file not found: {path}")
        source, where = path, str(path)
    try:
        with Image.open(source) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise ConfigError(f"{where} is not a readable image: {exc}") from exc


def processor_messages(messages: list[dict], media_dir: str | Path | None = None) -> list[dict]:
    """The conversation in ``apply_chat_template``'s content-parts form, images opened.

    A message's ``<image>`` markers must not outnumber its images (ConfigError); images without a
    marker go before the text.
    """
    out = []
    for index, message in enumerate(messages):
        images = [load_image(ref, media_dir) for ref in message.get("images") or ()]
        text = message.get("content") or ""
        if not images:
            out.append({"role": message["role"], "content": text})
            continue
        pieces = text.split(IMAGE_PLACEHOLDER)
        markers = len(pieces) - 1
        if markers > len(images):
            raise ConfigError(f"message {index} has {markers} {IMAGE_PLACEHOLDER} markers but {len(images)} images")
        parts: list[dict] = [{"type": "image", "image": image} for image in images[markers:]]
        for i, piece in enumerate(pieces):
            if piece:
                parts.append({"type": "text", "text": piece})
            if i < markers:
                parts.append({"type": "image", "image": images[i]})
        out.append({"role": message["role"], "content": parts})
    return out


def attach_record_images(messages: list[dict], images: list | None) -> list[dict]:
    """A record's ``images`` (LLaMA-Factory: one per ``<image>`` marker, in order over the conversation)
    given to the messages whose markers they fill; images beyond the markers go to the first user message.
    """
    if not images:
        return list(messages)
    remaining = list(images)
    out = []
    for message in messages:
        count = min(str(message.get("content") or "").count(IMAGE_PLACEHOLDER), len(remaining))
        taken, remaining = remaining[:count], remaining[count:]
        out.append({**message, "images": taken} if taken else dict(message))
    if remaining:
        first = next((i for i, m in enumerate(out) if m.get("role") == "user"), 0)
        out[first] = {**out[first], "images": remaining + list(out[first].get("images") or [])}
    return out
