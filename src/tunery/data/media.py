"""Media of multimodal examples: paths, placeholder counts, loading, and the model processor's encoding.

LLaMA-Factory's format: a row has ``images``/``videos``/``audios`` columns (lists of paths, relative
to ``media_dir``, which defaults to ``dataset_dir``) and the text holds one ``<image>``/``<video>``/
``<audio>`` placeholder per item, in order. This module checks that (the converters call
:func:`media_problem`), loads the files the way LLaMA-Factory's settings say (``image_max_pixels``,
``video_fps``, ``audio_sampling_rate``, ...) and hands them to the model's own processor
(transformers' ``AutoProcessor``), which encodes the pixels/features and expands each placeholder
into the model's media tokens. Written here is only what the processor lacks: the mapping from the
LLaMA-Factory placeholder to the text the processor expects, keeping each token's turn through the
expansion (so labels can mask prompts and media tokens exactly), and the file loading.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import os
import wave
from dataclasses import dataclass
from typing import Any

from tunery.errors import DataError, require

KINDS = ("images", "videos", "audios")
PLACEHOLDERS = {"images": "<image>", "videos": "<video>", "audios": "<audio>"}
SINGULAR = {"images": "image", "videos": "video", "audios": "audio"}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")

# The text a processor expects where a media item goes, when it is more than its ``image_token``
# (the chat templates of these families wrap the token; the processor expands the inner token).
WRAPPED = {
    "Qwen2VLProcessor": {"images": "<|vision_start|><|image_pad|><|vision_end|>",
                         "videos": "<|vision_start|><|video_pad|><|vision_end|>"},
    "Qwen2_5_VLProcessor": {"images": "<|vision_start|><|image_pad|><|vision_end|>",
                            "videos": "<|vision_start|><|video_pad|><|vision_end|>"},
    "Qwen3VLProcessor": {"images": "<|vision_start|><|image_pad|><|vision_end|>",
                         "videos": "<|vision_start|><|video_pad|><|vision_end|>"},
    "Qwen2AudioProcessor": {"audios": "<|audio_bos|><|AUDIO|><|audio_eos|>"},
}


def is_remote(item: str) -> bool:
    return item.startswith(("http://", "https://", "data:"))


def resolve_item(item: str, root: str | None) -> str:
    """A media path as the loader will open it: joined to ``root`` (media_dir or dataset_dir) when that
    file exists there, else kept as given (absolute paths, URLs, paths relative to the working folder)."""
    if is_remote(item) or os.path.isabs(item) or not root:
        return item
    joined = os.path.join(root, item)
    return joined if os.path.exists(joined) else item


def video_frames(item: str) -> list[str] | None:
    """A video given as a list of frame images is stored as its JSON list; None for a video file."""
    if item.startswith("["):
        try:
            frames = json.loads(item)
        except json.JSONDecodeError:
            return None
        return [str(f) for f in frames] if isinstance(frames, list) else None
    return None


def media_columns(row: dict[str, Any], attr: Any, root: str | None) -> dict[str, list[str] | None]:
    """``{"images": [...], "videos": [...], "audios": [...]}`` (None where absent) with resolved paths.

    Raises ValueError(kind, message) for a cell that is neither a path nor a list of paths.
    """
    out: dict[str, list[str] | None] = {}
    for kind in KINDS:
        col = attr.column(kind)
        value = row.get(col) if col else None
        if value in (None, "", []):
            out[kind] = None
            continue
        items = value if isinstance(value, list) else [value]
        resolved = []
        for item in items:
            if kind == "videos" and isinstance(item, list):  # a video as a list of frames
                resolved.append(json.dumps([resolve_item(str(f), root) for f in item]))
            elif isinstance(item, dict) and isinstance(item.get("path"), str):  # datasets' Image feature dict
                resolved.append(resolve_item(item["path"], root))
            elif isinstance(item, str):
                resolved.append(resolve_item(item, root))
            else:
                raise ValueError(kind, f"{SINGULAR[kind]} {len(resolved) + 1} must be a file path, got "
                                       f"{type(item).__name__}")
        out[kind] = resolved
    return out


def placeholder_counts(texts: list[str]) -> dict[str, int]:
    """How many ``<image>``/``<video>``/``<audio>`` placeholders the texts hold, per media kind."""
    return {kind: sum(t.count(PLACEHOLDERS[kind]) for t in texts if t) for kind in KINDS}


def record_texts(record: dict[str, Any]) -> list[str]:
    texts = [m["content"] for m in record.get("messages") or []]
    return texts + [record[k]["content"] for k in ("chosen", "rejected") if record.get(k)]


def count_problem(record: dict[str, Any]) -> tuple[str, str] | None:
    """(kind, reason) when a kind's placeholder count differs from its media count, else None."""
    counts = placeholder_counts([m["content"] for m in record.get("messages") or []])
    for kind in KINDS:
        items = record.get(kind) or []
        if counts[kind] != len(items):
            return kind, (f"{counts[kind]} {PLACEHOLDERS[kind]} placeholder(s) in the messages but "
                          f"{len(items)} {SINGULAR[kind] if len(items) == 1 else kind}; they must match one to one")
    return None


def missing_problem(record: dict[str, Any]) -> tuple[str, str] | None:
    """(kind, reason) for the first local media file that does not exist, else None."""
    for kind in KINDS:
        for i, item in enumerate(record.get(kind) or []):
            paths = video_frames(item) if kind == "videos" else None
            for path in paths if paths is not None else [item]:
                if not is_remote(path) and not os.path.isfile(path):
                    return kind, f"{SINGULAR[kind]} {i + 1} file not found: {path}"
    return None


def readable_problem(record: dict[str, Any]) -> tuple[str, str] | None:
    """(kind, reason) for the first image that cannot be decoded (``tunery data check`` opens each one)."""
    from PIL import Image, UnidentifiedImageError  # Pillow: a transformers dependency

    for i, item in enumerate(record.get("images") or []):
        if is_remote(item):
            continue
        try:
            with Image.open(item) as im:
                im.verify()
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
            return "images", f"image {i + 1} cannot be read as an image ({item}): {exc}"
    for i, item in enumerate(record.get("audios") or []):
        if item.lower().endswith(".wav") and os.path.isfile(item):
            try:
                with wave.open(item, "rb"):
                    pass
            except (wave.Error, EOFError, OSError) as exc:
                return "audios", f"audio {i + 1} cannot be read as WAV ({item}): {exc}"
    return None


# ---------------------------------------------------------------- loading


@dataclass(frozen=True)
class MediaSettings:
    """LLaMA-Factory's media settings (pixels are width x height; fps per second of video)."""

    image_max_pixels: int = 768 * 768
    image_min_pixels: int = 32 * 32
    video_max_pixels: int = 256 * 256
    video_min_pixels: int = 16 * 16
    video_fps: float = 2.0
    video_maxlen: int = 128
    audio_sampling_rate: int = 16000

    @classmethod
    def from_model_args(cls, model_args: Any) -> MediaSettings:
        mm = getattr(model_args, "multimodal", model_args)
        return cls(image_max_pixels=mm.image_max_pixels, image_min_pixels=mm.image_min_pixels,
                   video_max_pixels=mm.video_max_pixels, video_min_pixels=mm.video_min_pixels,
                   video_fps=mm.video_fps, video_maxlen=mm.video_maxlen, audio_sampling_rate=mm.audio_sampling_rate)


def fit_pixels(image, max_pixels: int, min_pixels: int):
    """Scale a PIL image (aspect kept) so that width x height lies in [min_pixels, max_pixels]; RGB."""
    from PIL import Image

    w, h = image.size
    if w * h > max_pixels:
        factor = math.sqrt(max_pixels / (w * h))
        image = image.resize((max(1, int(w * factor)), max(1, int(h * factor))), Image.Resampling.BICUBIC)
    elif w * h < min_pixels:
        factor = math.sqrt(min_pixels / (w * h))
        image = image.resize((max(1, math.ceil(w * factor)), max(1, math.ceil(h * factor))), Image.Resampling.BICUBIC)
    return image.convert("RGB") if image.mode != "RGB" else image


def data_url_bytes(item: str) -> io.BytesIO:
    """The decoded payload of a ``data:<mime>;base64,<data>`` URL; ValueError when it is not one."""
    header, _, payload = item.partition(",")
    if not header.startswith("data:") or ";base64" not in header or not payload:
        raise ValueError("a data URL must be data:<type>;base64,<data>")
    try:
        return io.BytesIO(base64.b64decode(payload, validate=False))
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"the data URL is not valid base64: {exc}") from exc


def load_image(item: str, settings: MediaSettings):
    """An RGB PIL image from a path (or data URL) fitted to the image pixel range; DataError if unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(data_url_bytes(item) if item.startswith("data:") else item)
        image.load()
    except (OSError, UnidentifiedImageError, ValueError, IndexError) as exc:
        raise DataError(f"cannot read image {item}: {exc}", field="images") from exc
    return fit_pixels(image, settings.image_max_pixels, settings.image_min_pixels)


def load_video(item: str, settings: MediaSettings) -> list:
    """Frames (PIL images) of a video: a list of frame files, or a video file sampled at ``video_fps``
    (at most ``video_maxlen`` frames, through the optional ``av`` package)."""
    frames = video_frames(item)
    if frames is not None:
        images = [load_image(f, MediaSettings(image_max_pixels=settings.video_max_pixels,
                                              image_min_pixels=settings.video_min_pixels)) for f in frames]
        images = images[: settings.video_maxlen]
        size = images[0].size if images else None  # a video's frames share one size
        return _even([im if im.size == size else im.resize(size) for im in images])
    av = require("av", "reading video files", "multimodal", package="av")
    try:
        with av.open(data_url_bytes(item) if item.startswith("data:") else item) as container:
            stream = container.streams.video[0]
            duration = float(stream.duration * stream.time_base) if stream.duration else 0.0
            total = stream.frames or 0
            wanted = max(1, min(settings.video_maxlen, int(duration * settings.video_fps) or total or 1))
            step = max(1, total // wanted) if total else 1
            picked = [frame.to_image() for i, frame in enumerate(container.decode(stream)) if i % step == 0]
    except (OSError, ValueError, IndexError) as exc:
        raise DataError(f"cannot read video {item}: {exc}", field="videos") from exc
    picked = [fit_pixels(f, settings.video_max_pixels, settings.video_min_pixels) for f in picked[:wanted]]
    return _even(picked)


def _even(frames: list) -> list:
    """Video processors with temporal patches of 2 need an even frame count: repeat the last frame."""
    return frames + frames[-1:] if len(frames) % 2 else frames


def load_audio(item: str, settings: MediaSettings):
    """Mono float32 samples at ``audio_sampling_rate``: WAV through the standard library (linear
    resampling), other formats through the optional ``librosa`` package. ``item`` is a path or a
    ``data:audio/<format>;base64,...`` URL (what the API's ``input_audio`` parts become)."""
    import numpy as np

    if item.startswith("data:"):
        try:
            source: Any = data_url_bytes(item)
        except ValueError as exc:
            raise DataError(f"cannot read audio: {exc}", field="audios") from exc
        is_wav = item[5:].split(";", 1)[0].lower() in ("audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave")
        item = "the audio data URL"
    else:
        source, is_wav = item, item.lower().endswith(".wav")
    if is_wav:
        try:
            with wave.open(source, "rb") as f:
                rate, width, channels = f.getframerate(), f.getsampwidth(), f.getnchannels()
                raw = f.readframes(f.getnframes())
        except (wave.Error, EOFError, OSError) as exc:
            raise DataError(f"cannot read audio {item}: {exc}", field="audios") from exc
        dtype = {1: np.uint8, 2: np.int16, 4: np.int32}.get(width)
        if dtype is None:
            raise DataError(f"audio {item}: {8 * width}-bit WAV is not supported", field="audios")
        samples = np.frombuffer(raw, dtype=dtype).astype(np.float32)
        samples = (samples - 128.0) / 128.0 if width == 1 else samples / float(np.iinfo(dtype).max)
        samples = samples.reshape(-1, channels).mean(axis=1)
        if rate != settings.audio_sampling_rate and len(samples):
            n = max(1, round(len(samples) * settings.audio_sampling_rate / rate))
            samples = np.interp(np.linspace(0, len(samples) - 1, n), np.arange(len(samples)), samples)
        return samples.astype(np.float32)
    librosa = require("librosa", "reading non-WAV audio files", "multimodal", package="librosa")
    samples, _ = librosa.load(source, sr=settings.audio_sampling_rate, mono=True)
    return samples


# ---------------------------------------------------------------- processor


def token_text(processor: Any, kind: str) -> str:
    """The text the processor expands for one media item of ``kind`` (e.g. LLaVA's ``<image>``)."""
    wrapped = WRAPPED.get(type(processor).__name__, {})
    if kind in wrapped:
        return wrapped[kind]
    token = getattr(processor, f"{SINGULAR[kind]}_token", None)
    if not token:
        raise DataError(f"the model's processor ({type(processor).__name__}) takes no {kind}", field=kind,
                        hint=f"use a model that reads {kind}, or remove the {kind} column from dataset_info.json")
    return token


def media_token_ids(processor: Any) -> set[int]:
    """Ids of the tokens the processor expands into (never trained): transformers' own per-modality
    lists (``image_token_ids``, ...: what it marks in ``mm_token_type_ids``) plus each media token."""
    ids = set()
    for name in ("image_token_ids", "video_token_ids", "audio_token_ids"):
        try:
            values = getattr(processor, name, None) or []
        except (AttributeError, TypeError, ValueError):
            values = []
        ids.update(v for v in values if isinstance(v, int))
    for name in ("image_token_id", "video_token_id", "audio_token_id"):
        value = getattr(processor, name, None)
        if isinstance(value, int):
            ids.add(value)
    tok = processor.tokenizer
    for name in ("image_token", "video_token", "audio_token"):
        token = getattr(processor, name, None)
        if isinstance(token, str):
            token_id = tok.convert_tokens_to_ids(token)
            if isinstance(token_id, int) and token_id != tok.unk_token_id:
                ids.add(token_id)
    return ids


def with_model_tokens(messages: list[dict[str, str]], processor: Any) -> list[dict[str, str]]:
    """Messages with each LLaMA-Factory placeholder replaced by the processor's media text."""
    out = []
    for message in messages:
        content = message["content"]
        for kind in KINDS:
            if PLACEHOLDERS[kind] in content:
                replacement = token_text(processor, kind)
                if replacement != PLACEHOLDERS[kind]:
                    content = content.replace(PLACEHOLDERS[kind], replacement)
        out.append({**message, "content": content})
    return out


def align_turns(input_ids: list[int], turns: list[int], expanded: list[int], media_ids: set[int]) -> list[int]:
    """Turns of the processor's ``expanded`` ids: tokens it kept keep their turn, tokens it added or
    replaced get -1 (media tokens and their wrapping, all inside a user turn), media tokens always -1.

    Raises DataError when the processor changed a token of an assistant turn: the labels would no
    longer match the reply (never trained misaligned).
    """
    import difflib

    out = [-1] * len(expanded)
    matcher = difflib.SequenceMatcher(None, input_ids, expanded, autojunk=False)
    for op, a0, a1, b0, b1 in matcher.get_opcodes():
        if op == "equal":
            out[b0:b1] = [-1 if t in media_ids else turn for t, turn in zip(expanded[b0:b1], turns[a0:a1])]
        elif any(turn >= 0 for turn in turns[a0:a1]):
            raise DataError("the processor tokenized an assistant reply differently from the template "
                            f"(tokens {input_ids[a0:a1]} became {expanded[b0:b1]})",
                            hint="use template: auto or the model family's template name")
    return out


class MediaEncoder:
    """The model processor plus the media settings: expands token ids and builds the media tensors.

    ``expand`` is used while tokenizing (counts only), ``batch_features`` by the collator (tensors);
    both load the files the same way, so the token counts match the features.
    """

    def __init__(self, processor: Any, settings: MediaSettings) -> None:
        self.processor = processor
        self.settings = settings
        self.token_ids = media_token_ids(processor)

    def fingerprint(self) -> dict[str, Any]:
        """What changes the token ids (for the tokenized-data cache key)."""
        return {"processor": type(self.processor).__name__, "settings": self.settings.__dict__,
                "tokens": {k: self._safe_token_text(k) for k in KINDS}}

    def _safe_token_text(self, kind: str) -> str | None:
        try:
            return token_text(self.processor, kind)
        except DataError:
            return None

    def load(self, record: dict[str, Any]) -> dict[str, list]:
        """The record's media, loaded: {"images": [PIL], "videos": [[PIL]], "audios": [ndarray]}."""
        return {
            "images": [load_image(i, self.settings) for i in record.get("images") or []],
            "videos": [load_video(v, self.settings) for v in record.get("videos") or []],
            "audios": [load_audio(a, self.settings) for a in record.get("audios") or []],
        }

    def _call(self, text: str, media: dict[str, list]) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if media["images"]:
            kwargs["images"] = media["images"]
        if media["videos"]:
            kwargs["videos"] = media["videos"]
        if media["audios"]:
            kwargs["audio"] = media["audios"]
            kwargs["sampling_rate"] = self.settings.audio_sampling_rate
        try:
            return self.processor(text=[text], add_special_tokens=False, return_tensors="pt", **kwargs)
        except (ValueError, TypeError, RuntimeError) as exc:
            raise DataError(f"the model's processor rejected the media: {exc}") from exc

    def expand(self, input_ids: list[int], turns: list[int], text: str,
               record: dict[str, Any]) -> tuple[list[int], list[int]]:
        """(expanded ids, turns) where each media token becomes as many as the processor makes.

        ``input_ids``/``turns``/``text`` are the template's encoding of the conversation with
        :func:`with_model_tokens` applied. The processor tokenizes the same text, expanding each media
        token (some also add text around it, as Gemma 3's newlines); see :func:`align_turns`.
        """
        out = self._call(text, self.load(record))
        expanded = out["input_ids"][0].tolist()
        return expanded, align_turns(input_ids, turns, expanded, self.token_ids)

    def count_media_tokens(self, ids: list[int]) -> int:
        return sum(1 for t in ids if t in self.token_ids)

    def batch_features(self, rows: list[dict[str, Any]], input_ids: Any = None) -> dict[str, Any]:
        """The processor's media tensors (pixel_values, image_grid_thw, input_features, ...) for the
        media of ``rows`` in order; {} when they have none. ``input_ids`` (the padded batch) is needed
        by models whose media inputs follow the token positions (mllama's cross-attention mask)."""
        if type(self.processor).__name__ == "MllamaProcessor":
            return self._mllama_features(rows, input_ids)
        media: dict[str, list] = {k: [] for k in KINDS}
        parts: list[str] = []
        for row in rows:
            loaded = self.load(row)
            for kind in KINDS:
                if loaded[kind]:
                    media[kind] += loaded[kind]
                    parts += [token_text(self.processor, kind)] * len(loaded[kind])
        if not parts:
            return {}
        out = dict(self._call("".join(parts), media))
        for key in ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids"):
            out.pop(key, None)
        names = getattr(self.processor, "model_input_names", ())
        if input_ids is not None and ("mm_token_type_ids" in names or (
                "token_type_ids" in names and getattr(self.processor, "return_mm_token_type_ids", False))):
            # which tokens are media tokens: Qwen-VL's 3-D rope positions (mm_token_type_ids) and Gemma 3's
            # bidirectional attention inside an image (token_type_ids) are computed from it
            import torch

            key = "mm_token_type_ids" if "mm_token_type_ids" in names else "token_type_ids"
            out[key] = torch.tensor(self.processor.create_mm_token_type_ids(input_ids.tolist()))
        return out

    def _mllama_features(self, rows: list[dict[str, Any]], input_ids: Any) -> dict[str, Any]:
        """mllama keeps images per example (batch, images, tiles, ...) and attends to them through a
        cross-attention mask over the token positions: built here from the padded batch's ids, with
        transformers' own mllama helpers."""
        import torch
        from transformers.models.mllama.processing_mllama import (
            convert_sparse_cross_attention_mask_to_dense,
            get_cross_attention_token_mask,
        )

        images = [self.load(row)["images"] for row in rows]
        if not any(images):
            return {}
        if not all(images):
            raise DataError("mllama batches need an image in every example (mix text-only rows into another run)",
                            field="images")
        processed = self.processor.image_processor(images, return_tensors="pt")
        num_tiles = processed.pop("num_tiles")
        ids = input_ids.tolist()
        token_mask = [get_cross_attention_token_mask(row, self.processor.image_token_id) for row in ids]
        dense = convert_sparse_cross_attention_mask_to_dense(
            token_mask, num_tiles=num_tiles, max_num_tiles=self.processor.image_processor.max_image_tiles,
            length=len(ids[0]))
        return {**processed, "cross_attention_mask": torch.tensor(dense)}
