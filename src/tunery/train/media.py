"""The media encoder of a run: the one place a stage (sft, dpo/orpo/simpo, rm, kto) or the dry run learns whether
its data carries images/videos/audios for a model that has a processor for them."""

from __future__ import annotations

from typing import Any

from tunery.data.dataset_info import get_dataset_attrs
from tunery.data.media import KINDS, MediaEncoder, MediaSettings
from tunery.model.loader import resolve
from tunery.model.multimodal import is_multimodal, load_processor

# The stages that encode media rows through the model's processor (pt, ppo and grpo refuse media rows).
MEDIA_STAGES = ("sft", "dpo", "orpo", "simpo", "rm", "kto")


def media_encoder(cfg: Any) -> MediaEncoder | None:
    """The model's processor with the media settings, when a dataset of the run maps media columns
    (images/videos/audios) and the model has a processor for them; None otherwise (text data, or a
    text-only model: then media rows are refused by the data pipeline, never trained without media).

    Raises DependencyError (via ``load_processor``) when the processor needs a package that is missing."""
    names = ",".join(n for n in (cfg.data.dataset, cfg.data.eval_dataset) if n)
    attrs = get_dataset_attrs(names, cfg.data.dataset_dir) if names else []
    if not any(attr.column(kind) for attr in attrs for kind in KINDS):
        return None
    path = resolve(cfg.model).path
    if not is_multimodal(path):
        return None
    processor = load_processor(path, trust_remote_code=cfg.model.trust_remote_code)
    return MediaEncoder(processor, MediaSettings.from_model_args(cfg.model))
