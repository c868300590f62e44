"""model.multimodal: the family registry, processor loading, VLM loading and image-token expansion per family."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tunery.config import ModelArguments
from tunery.config.lf_keys import LF_TEMPLATES
from tunery.errors import ModelError
from tunery.model import multimodal as mm

# family -> (placeholder tokens one 40x30 image (or 1 s of audio) expands to, computed by hand from the
# fixture's sizes; the processor's own count must agree)
EXPECTED_TOKENS = {
    "llava": 16,  # CLIP 32x32 / patch 8 = 16 patches + CLS - CLS ("default" strategy)
    "llava_next": None,  # any-resolution tiles: taken from the processor's own formula
    "qwen2_vl": 4,  # resized to 56x56: 4x4 patches of 14, merged 2x2 -> 4
    "qwen2_5_vl": 4,
    "gemma3": 4,  # 4x4 SigLIP patches average-pooled to 2x2 (mm_tokens_per_image)
    "mllama": 1,  # one <|image|>; the tiles are read through cross-attention
    "qwen2_audio": 25,  # 1 s = 100 mel frames -> 50 after the conv -> 25 after pooling
}
TOKEN_OF = {"llava": "<image>", "llava_next": "<image>", "qwen2_vl": "<|image_pad|>",
            "qwen2_5_vl": "<|image_pad|>", "gemma3": "<image_soft_token>", "mllama": "<|image|>",
            "qwen2_audio": "<|AUDIO|>"}


def _inputs(family, processor):
    kind = "audio" if family == "qwen2_audio" else "image"
    messages = [{"role": "user", "content": [{"type": kind}, {"type": "text", "text": "What is in this picture?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    if kind == "audio":
        return processor(text=text, audio=[np.zeros(16000, dtype=np.float32)], return_tensors="pt")
    size = (56, 56) if family.startswith("qwen") else (40, 30)
    return processor(text=text, images=[Image.new("RGB", size, (200, 30, 30))], return_tensors="pt")


@pytest.mark.parametrize("family", sorted(EXPECTED_TOKENS))
def test_family_loads_expands_media_tokens_and_runs_forward(family, tiny_vlm_factory):
    from tunery.model.loader import load_model, load_tokenizer

    path = tiny_vlm_factory(family)
    assert mm.is_multimodal(path)
    spec = mm.family_of(path)
    processor = mm.load_processor(path)
    args = ModelArguments(model_name_or_path=str(path))
    model = load_model(load_tokenizer(args), args)
    assert type(model).__name__ == mm.model_class(spec).__name__ or spec.model_class.startswith("Auto")
    assert type(model).__name__.endswith("ForConditionalGeneration")

    inputs = _inputs(family, processor)
    token_id = processor.tokenizer.convert_tokens_to_ids(TOKEN_OF[family])
    count = int((inputs["input_ids"][0] == token_id).sum())
    expected = EXPECTED_TOKENS[family]
    if family not in ("qwen2_audio", "mllama"):
        image_size = [[56, 56]] if family.startswith("qwen") else [[30, 40]]
        own = processor._get_num_multimodal_tokens(image_sizes=image_size)["num_image_tokens"][0]
        expected = own if expected is None else expected
        assert own == expected
    assert count == expected
    with torch.no_grad():
        out = model(**inputs)  # the model itself checks image features against placeholder tokens
    assert out.logits.shape[:2] == inputs["input_ids"].shape
    assert torch.isfinite(out.logits).all()


def _weights(part):
    return [part] if isinstance(part, torch.nn.Parameter) else list(part.parameters())


@pytest.mark.parametrize("family", ["llava", "gemma3", "qwen2_audio", "mllama", "llava_next", "qwen2_vl",
                                    "qwen2_5_vl"])
def test_registered_module_names_exist_in_the_model(family, tiny_vlm_factory):
    import transformers

    path = tiny_vlm_factory(family)
    spec = mm.family_of(path)
    model = getattr(transformers, spec.model_class).from_pretrained(path)
    for part in ("vision_tower", "projector", "language_model"):
        names = mm.module_names(spec, part)
        found = mm.find_modules(model, names)
        assert len(found) == len(names), (part, names)
        assert all(sum(p.numel() for p in _weights(m)) > 0 for m in found)
    # the three parts cover every weight of the model (nothing escapes a freeze switch)
    covered = {id(p) for part in ("vision_tower", "projector", "language_model")
               for m in mm.find_modules(model, mm.module_names(spec, part)) for p in _weights(m)}
    assert covered == {id(p) for p in model.parameters()}


def test_registry_entries_are_consistent():
    import transformers

    for model_type, family in mm.FAMILIES.items():
        assert family.model_type == model_type
        assert family.media and set(family.media) <= {"image", "video", "audio"}
        assert hasattr(transformers, family.model_class), family.model_class
        for name in family.templates:
            assert name in LF_TEMPLATES, name
    assert mm.family_of("qwen2_5_vl").mrope and not mm.family_of("llava").mrope
    assert mm.family_of("qwen2_audio").media == ("audio",)
    assert mm.family_of("llama") is None


def test_text_model_is_not_multimodal(tiny_chatml_model, tmp_path):
    assert not mm.is_multimodal(tiny_chatml_model)
    assert not mm.is_multimodal(tmp_path)  # no config.json at all
    with pytest.raises(ModelError, match="processor"):
        mm.load_processor(tiny_chatml_model)


@pytest.mark.parametrize("name", ["qwen2_vl", "llava", "llava_next", "qwen2_audio", "mllama", "intern_vl",
                                  "minicpm_v", "qwen3_vl", "qwen2_omni", "llava_next_video"])
def test_multimodal_template_names_read_as_the_processor_template(name, tiny_llava, caplog, monkeypatch):
    from tunery.data import template as template_module
    from tunery.data.template import AutoTemplate, get_template
    from tunery.model.loader import load_tokenizer

    monkeypatch.setattr(template_module, "_SAID_AUTO", set())  # the notice is said once per process

    tokenizer = load_tokenizer(ModelArguments(model_name_or_path=str(tiny_llava)))
    with caplog.at_level("INFO"):
        template = get_template(name, tokenizer)
    assert isinstance(template, AutoTemplate)
    assert f"template '{name}'" in caplog.text and "processor's own chat template" in caplog.text
    text = template.render_text([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    assert text == tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                                 add_generation_prompt=True)


def test_text_only_lf_template_names_are_still_refused(tiny_chatml_model):
    from tunery.data.template import get_template
    from tunery.errors import ConfigError
    from tunery.model.loader import load_tokenizer

    tokenizer = load_tokenizer(ModelArguments(model_name_or_path=str(tiny_chatml_model)))
    with pytest.raises(ConfigError, match="no builtin"):
        get_template("gemma4", tokenizer)
    assert get_template("chatglm3", tokenizer).name == "chatglm3"
    assert get_template("gemma3", tokenizer).name == "gemma3"  # a builtin keeps its meaning


def test_missing_torchvision_is_a_dependency_error_with_the_matching_pair(tmp_path, monkeypatch):
    import transformers

    from tunery.errors import DependencyError

    (tmp_path / "config.json").write_text('{"model_type": "qwen2_vl"}', encoding="utf-8")

    def no_torchvision(*args, **kwargs):
        raise ImportError("Qwen2VLVideoProcessor requires the Torchvision library but it was not found")

    monkeypatch.setattr(transformers.AutoProcessor, "from_pretrained", no_torchvision)
    with pytest.raises(DependencyError, match="torchvision") as info:
        mm.load_processor(tmp_path)
    assert "torch==2.14.1 torchvision==0.29.1" in info.value.hint
