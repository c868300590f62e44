"""Vision/audio-language model families: which class loads them, what media they take, their parts.

One typed registry, keyed by the ``model_type`` of a checkpoint's ``config.json``. Everything
multimodal that depends on the family reads it here: the loader (which transformers class to
load), the data side (which media kinds a model takes, whether its position ids are 3-D), freezing
(the module names of the vision tower, the projector and the language model) and the template
table (LLaMA-Factory's template names for the family, all served by the processor's own chat
template). transformers does the media encoding and the placeholder expansion (``AutoProcessor``);
nothing here re-implements it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tunery.errors import DependencyError, ModelError
from tunery.logging import get_logger

MediaKind = Literal["image", "video", "audio"]

logger = get_logger(__name__)

# The files a processor saves beside the tokenizer (transformers 5 writes processor_config.json and
# chat_template.jinja; older checkpoints have preprocessor_config.json, video_preprocessor_config.json,
# chat_template.json). An export of a multimodal model copies every one that exists.
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json", "video_preprocessor_config.json",
                   "chat_template.jinja", "chat_template.json")


# torchvision must match the installed torch exactly; a bare `pip install torchvision` replaces torch.
TORCHVISION_HINT = ("install torch and torchvision as a matching pair in one call, e.g. "
                    "pip install torch==2.14.1 torchvision==0.29.1 (what make setup installs; docs/multimodal.md)")


@dataclass(frozen=True)
class Family:
    """One multimodal architecture as Tunery needs to know it.

    ``model_class``: the transformers class that loads it for fine-tuning (an ``AutoModelFor...`` or the
    family's own class). ``vision_tower`` / ``projector`` / ``language_model``: dotted module names
    inside that class (transformers 5 layout), each a tuple because some families have two towers
    (image + audio) or none of a part. ``mrope``: position ids are 3-D (temporal, height, width;
    shape ``(3, batch, seq)``), so packing and padding-free batches must carry them per example.
    A projector may sit inside the vision tower (Qwen-VL's ``model.visual.merger``): freeze or unfreeze
    the tower first, then apply the projector's setting.
    """

    model_type: str
    model_class: str
    media: tuple[MediaKind, ...]
    templates: tuple[str, ...] = ()
    vision_tower: tuple[str, ...] = ("model.vision_tower",)
    projector: tuple[str, ...] = ("model.multi_modal_projector",)
    language_model: tuple[str, ...] = ("model.language_model", "lm_head")
    mrope: bool = False
    needs_torchvision: bool = False  # its processor (the video processor) needs torchvision in transformers 5
    remote_code: bool = False  # only its hub repository's code loads it (trust_remote_code)


_AUTO = "AutoModelForImageTextToText"
_NEXT_PROJECTOR = ("model.multi_modal_projector", "model.image_newline")  # the row separator is learnt with it
_QWEN_VISUAL = {"vision_tower": ("model.visual",), "projector": ("model.visual.merger",)}

FAMILIES: dict[str, Family] = {f.model_type: f for f in (
    Family("llava", _AUTO, ("image",), ("llava",)),
    Family("llava_next", _AUTO, ("image",), ("llava_next", "llava_next_llama3", "llava_next_mistral",
                                             "llava_next_qwen", "llava_next_yi"), projector=_NEXT_PROJECTOR),
    Family("llava_next_video", _AUTO, ("image", "video"),
           ("llava_next_video", "llava_next_video_mistral", "llava_next_video_yi"), projector=_NEXT_PROJECTOR),
    Family("llava_onevision", _AUTO, ("image", "video"), projector=_NEXT_PROJECTOR),
    Family("video_llava", _AUTO, ("image", "video"), ("video_llava",),
           vision_tower=("model.image_tower", "model.video_tower")),
    Family("qwen2_vl", _AUTO, ("image", "video"), ("qwen2_vl",), mrope=True, needs_torchvision=True,
           **_QWEN_VISUAL),
    Family("qwen2_5_vl", _AUTO, ("image", "video"), ("qwen2_vl",), mrope=True, needs_torchvision=True,
           **_QWEN_VISUAL),
    Family("qwen3_vl", _AUTO, ("image", "video"), ("qwen3_vl", "qwen3_vl_nothink"), mrope=True,
           needs_torchvision=True, **_QWEN_VISUAL),
    Family("qwen3_vl_moe", _AUTO, ("image", "video"), ("qwen3_vl", "qwen3_vl_nothink"), mrope=True,
           needs_torchvision=True, **_QWEN_VISUAL),
    Family("qwen3_5", _AUTO, ("image", "video"), ("qwen3_5", "qwen3_5_nothink", "qwen3_6"), mrope=True,
           needs_torchvision=True, **_QWEN_VISUAL),
    Family("glm4v", _AUTO, ("image", "video"), ("glm4v", "glm4_5v"), mrope=True, needs_torchvision=True,
           **_QWEN_VISUAL),
    Family("gemma3", _AUTO, ("image",), ("gemma3",)),
    Family("gemma3n", "AutoModelForMultimodalLM", ("image", "audio"), ("gemma3n",),
           vision_tower=("model.vision_tower", "model.audio_tower"),
           projector=("model.embed_vision", "model.embed_audio")),
    Family("paligemma", _AUTO, ("image",), ("paligemma", "paligemma_chat")),
    Family("internvl", _AUTO, ("image", "video"), ("intern_vl", "intern_s1")),
    Family("minicpmv4_6", _AUTO, ("image", "video"), ("minicpm_v_4_6",), projector=("model.merger",)),
    Family("minicpmv", "AutoModel", ("image", "video"), ("minicpm_v", "minicpm_o"), remote_code=True,
           vision_tower=("vpm",), projector=("resampler",), language_model=("llm",)),
    Family("mllama", _AUTO, ("image",), ("mllama",), vision_tower=("model.vision_model",)),
    Family("llama4", _AUTO, ("image",), ("llama4",), vision_tower=("vision_model",),
           projector=("multi_modal_projector",), language_model=("language_model",)),
    Family("mistral3", _AUTO, ("image",), ("pixtral", "mistral_small", "ministral3")),
    Family("smolvlm", _AUTO, ("image",), vision_tower=("model.vision_model",), projector=("model.connector",)),
    Family("idefics3", _AUTO, ("image",), vision_tower=("model.vision_model",), projector=("model.connector",)),
    Family("qwen2_audio", "Qwen2AudioForConditionalGeneration", ("audio",), ("qwen2_audio",),
           vision_tower=("model.audio_tower",)),
    # Omni checkpoints hold a thinker (text out) and a talker (speech out); fine-tuning trains the thinker.
    Family("qwen2_5_omni", "Qwen2_5OmniThinkerForConditionalGeneration", ("image", "video", "audio"),
           ("qwen2_omni",), vision_tower=("model.visual", "model.audio_tower"), projector=("model.visual.merger",),
           mrope=True, needs_torchvision=True),
    Family("qwen3_omni_moe", "Qwen3OmniMoeThinkerForConditionalGeneration", ("image", "video", "audio"),
           ("qwen3_omni", "qwen3_omni_nothink"), vision_tower=("model.visual", "model.audio_tower"),
           projector=("model.visual.merger",), mrope=True, needs_torchvision=True),
)}

# LLaMA-Factory's multimodal template name -> the model_types it is meant for.
TEMPLATE_FAMILIES: dict[str, tuple[str, ...]] = {}
for _family in FAMILIES.values():
    for _name in _family.templates:
        TEMPLATE_FAMILIES.setdefault(_name, ())
        TEMPLATE_FAMILIES[_name] += (_family.model_type,)
# LLaMA-Factory templates for multimodal models whose family transformers does not have (remote code).
TEMPLATE_FAMILIES.update({name: () for name in (
    "ernie_vl", "glm_ocr", "granite3_vision", "keye_vl", "kimi_vl", "lfm2_vl", "mimo_vl", "yi_vl",
    "youtu_vl", "dots_ocr") if name not in TEMPLATE_FAMILIES})


def is_multimodal_template(name: str | None) -> bool:
    """True for a LLaMA-Factory template name that belongs to a multimodal family (``qwen2_vl``, ``llava``...)."""
    return bool(name) and name in TEMPLATE_FAMILIES


def read_model_type(model_dir: str | Path) -> str | None:
    """``model_type`` from ``model_dir/config.json`` (None when there is no config or no such key)."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc
    return data.get("model_type") if isinstance(data, dict) else None


def family_of(config_or_dir: Any) -> Family | None:
    """The registered family of a transformers config, a ``model_type`` string or a model folder; else None."""
    if isinstance(config_or_dir, Path) or (isinstance(config_or_dir, str) and Path(config_or_dir).is_dir()):
        model_type = read_model_type(config_or_dir)
    elif isinstance(config_or_dir, str):
        model_type = config_or_dir
    else:
        model_type = getattr(config_or_dir, "model_type", None)
    return FAMILIES.get(model_type) if model_type else None


def is_multimodal(model_dir: str | Path | Any) -> bool:
    """True when a model folder (or config) is a registered vision/audio-language family."""
    return family_of(model_dir) is not None


def model_class(family: Family) -> Any:
    """The transformers class that loads ``family`` (``AutoModelForImageTextToText`` or the family's own)."""
    import transformers  # the heavy library; imported when a model is about to load anyway

    cls = getattr(transformers, family.model_class, None)
    if cls is None:
        raise ModelError(f"this transformers ({transformers.__version__}) has no {family.model_class} "
                         f"for {family.model_type} models", hint="upgrade transformers")
    return cls


def sequence_classifier_class(family: Family) -> Any:
    """A sequence-classification class (a reward model: score head on the language model's last
    hidden state) for ``family``: transformers' own where it has one (Gemma 3), else transformers'
    generic head (``GenericForSequenceClassification``, what its text families use) over the
    family's base model (``AutoModel``: the vision tower, projector and language model, which takes
    the same media inputs as the generation class). The checkpoint's ``model.*`` weights load into
    it unchanged; the ``score`` head is new.

    Raises ModelError when the family has no transformers base model (remote-code families)."""
    import transformers  # the heavy library; imported when a model is about to load anyway
    from transformers.conversion_mapping import (
        get_checkpoint_conversion_mapping,
        register_checkpoint_conversion_mapping,
    )
    from transformers.modeling_layers import GenericForSequenceClassification
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if family.remote_code or family.model_type not in CONFIG_MAPPING:
        raise ModelError(f"no reward-model (sequence classification) class for {family.model_type} models",
                         hint="train the reward model on a family transformers has a base model for")
    config_cls = CONFIG_MAPPING[family.model_type]
    own = transformers.AutoModelForSequenceClassification._model_mapping
    if config_cls in own:
        return own[config_cls]
    generation_cls = model_class(family)
    mapping = getattr(generation_cls, "_model_mapping", None)
    generation_cls = mapping[config_cls] if mapping is not None and config_cls in mapping else generation_cls
    bases = [c for c in generation_cls.__mro__ if c.__name__.endswith("PreTrainedModel")
             and c is not transformers.PreTrainedModel]
    if not bases or config_cls not in transformers.AutoModel._model_mapping:
        raise ModelError(f"no reward-model (sequence classification) class for {family.model_type} models",
                         hint="train the reward model on a family transformers has a base model for")
    name = generation_cls.__name__.replace("ForConditionalGeneration", "") + "ForSequenceClassification"
    # Checkpoints saved in an older layout (Qwen-VL's top-level visual.*) load through the generation
    # class's key renaming; the new class gets the same one (transformers looks it up by class name).
    renaming = get_checkpoint_conversion_mapping(generation_cls.__name__)
    if renaming is not None:
        register_checkpoint_conversion_mapping(name, renaming, overwrite=True)
    return type(name, (GenericForSequenceClassification, bases[0]), {"__module__": __name__})


def load_processor(path: str | Path, *, trust_remote_code: bool = False, **kwargs: Any) -> Any:
    """``AutoProcessor`` of a multimodal model folder: tokenizer + image/video/audio processors + chat template.

    ``kwargs`` go to ``AutoProcessor.from_pretrained`` (e.g. ``min_pixels``/``max_pixels`` for Qwen-VL).
    Raises DependencyError when the processor needs torchvision and it is missing, ModelError when
    the folder has no processor files.
    """
    from transformers import AutoProcessor

    family = family_of(Path(path)) if Path(path).is_dir() else None
    try:
        processor = AutoProcessor.from_pretrained(str(path), trust_remote_code=trust_remote_code, **kwargs)
    except ImportError as exc:
        if "torchvision" in str(exc).lower() or (family is not None and family.needs_torchvision):
            error = DependencyError("torchvision", f"the {family.model_type if family else 'model'}'s processor")
            error.hint = TORCHVISION_HINT
            raise error from exc
        raise ModelError(f"cannot load the processor of {path}: {exc}") from exc
    except (OSError, ValueError, TypeError) as exc:
        raise ModelError(f"cannot load the processor of {path}: {exc}",
                         hint="a multimodal model folder needs its processor files (processor_config.json or "
                              "preprocessor_config.json)") from exc
    if not hasattr(processor, "tokenizer"):
        raise ModelError(f"{path} holds a {type(processor).__name__}, not a multimodal processor with a tokenizer")
    return processor


def module_names(family: Family, part: Literal["vision_tower", "projector", "language_model"]) -> tuple[str, ...]:
    """Dotted module names of one part of ``family``'s model (for freezing), e.g. ``("model.vision_tower",)``."""
    return getattr(family, part)


def find_modules(model: Any, names: tuple[str, ...]) -> list[Any]:
    """The submodules (or single parameters, e.g. LLaVA-NeXT's ``image_newline``) of ``model`` at the
    dotted ``names`` that exist; a PEFT wrapper is looked through. Each has ``requires_grad_``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    found = []
    for name in names:
        try:
            found.append(base.get_submodule(name))
        except AttributeError:
            try:
                found.append(base.get_parameter(name))
            except AttributeError:
                continue
    return found


def media_tokens(processor: Any) -> dict[MediaKind, str]:
    """The placeholder token the processor expands per media kind, e.g. ``{"image": "<image>"}``."""
    tokens: dict[MediaKind, str] = {}
    for kind in ("image", "video", "audio"):
        token = getattr(processor, f"{kind}_token", None)
        if isinstance(token, str) and token:
            tokens[kind] = token
    return tokens
