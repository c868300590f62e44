"""Tiny random vision/audio-language models with their processors: offline, built in seconds.

``build_tiny_vlm(family, out_dir)`` writes a folder that ``AutoProcessor`` and the family's model
class load like a real checkpoint: random weights (a 2-layer vision or audio encoder, a 2-layer
text model), a byte-level BPE tokenizer trained on the fly that holds the family's special tokens,
an image (or audio) processor configured for small inputs, and a chat template in the family's
layout (content given as a string or as a list of ``{"type": "image"|"video"|"audio"|"text"}`` parts).

Sizes are chosen so a 32x32 image (LLaVA, Gemma 3) or a 56x56 image (Qwen-VL) expands to a few
placeholder tokens: LLaVA 16 per image, LLaVA-NeXT a few dozen, Gemma 3 4, Qwen2-VL 4 at 56x56.

The Qwen-VL processors need torchvision in transformers 5 (their video processor does); without
it ``build_tiny_vlm("qwen2_vl", ...)`` raises ``ImportError`` (the fixtures skip).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tests.fixtures.tiny_models import CORPUS

FAMILIES = ("llava", "llava_next", "qwen2_vl", "qwen2_5_vl", "gemma3", "qwen2_audio", "mllama")
# The families that need torchvision to build their processor.
NEEDS_TORCHVISION = ("qwen2_vl", "qwen2_5_vl")

HIDDEN = 64  # text hidden size; 4 heads of 16


def has_torchvision() -> bool:
    return importlib.util.find_spec("torchvision") is not None


# --- chat templates (written for these fixtures; each follows its family's published layout) ---

def _parts_loop(image: str, video: str = "", audio: str = "") -> str:
    """Jinja for one message's content: a string, or a list of typed parts with media markers."""
    return (
        "{% if message['content'] is string %}{{ message['content'] }}"
        "{% else %}{% for part in message['content'] %}"
        f"{{% if part['type'] == 'image' %}}{{{{ '{image}' }}}}"
        f"{{% elif part['type'] == 'video' %}}{{{{ '{video}' }}}}"
        f"{{% elif part['type'] == 'audio' %}}{{{{ '{audio}' }}}}"
        "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
        "{% endfor %}{% endif %}"
    )


def _chatml_template(image: str, video: str = "", audio: str = "") -> str:
    return (
        "{% for message in messages %}"
        "{% if loop.first and message['role'] != 'system' %}"
        "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
        "{{ '<|im_start|>' + message['role'] + '\n' }}"
        + _parts_loop(image, video, audio)
        + "{{ '<|im_end|>\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )


VICUNA_TEMPLATE = (  # LLaVA-1.5: "USER: <image>\n... ASSISTANT: ...</s>"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] + ' ' }}"
    "{% elif message['role'] == 'user' %}{{ 'USER: ' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<image>\n' }}{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ ' ' }}"
    "{% else %}{{ 'ASSISTANT: ' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ '</s>' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

GEMMA3_TEMPLATE = (  # <start_of_turn>user / model, the image as <start_of_image>
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else 'user' %}"
    "{{ '<start_of_turn>' + role + '\n' }}"
    + _parts_loop("<start_of_image>")
    + "{{ '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)

MLLAMA_TEMPLATE = (  # Llama 3 headers, the image as <|image|>
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
    + _parts_loop("<|image|>")
    + "{{ '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

QWEN_VL_TEMPLATE = _chatml_template("<|vision_start|><|image_pad|><|vision_end|>",
                                    "<|vision_start|><|video_pad|><|vision_end|>")
QWEN_AUDIO_TEMPLATE = _chatml_template("", audio="<|audio_bos|><|AUDIO|><|audio_eos|>")

CHATML_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TOKENIZERS = {  # family -> (special tokens, bos, eos, pad, named extra special tokens)
    "llava": (["<s>", "</s>", "<unk>", "<pad>", "<image>"], "<s>", "</s>", "<pad>", {"image_token": "<image>"}),
    "qwen2_vl": (CHATML_SPECIALS + ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"],
                 None, "<|im_end|>", "<|endoftext|>",
                 {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                  "vision_bos_token": "<|vision_start|>", "vision_eos_token": "<|vision_end|>"}),
    "gemma3": (["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>",
                "<image_soft_token>"], "<bos>", "<end_of_turn>", "<pad>",
               {"image_token": "<image_soft_token>", "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>"}),
    "qwen2_audio": (CHATML_SPECIALS + ["<|audio_bos|>", "<|AUDIO|>", "<|audio_eos|>"], None, "<|im_end|>",
                    "<|endoftext|>",
                    {"audio_token": "<|AUDIO|>", "audio_bos_token": "<|audio_bos|>", "audio_eos_token": "<|audio_eos|>"}),
    "mllama": (["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                "<|finetune_right_pad_id|>", "<|image|>"], "<|begin_of_text|>", "<|eot_id|>",
               "<|finetune_right_pad_id|>", {"image_token": "<|image|>"}),
}
TOKENIZERS["llava_next"] = TOKENIZERS["llava"]
TOKENIZERS["qwen2_5_vl"] = TOKENIZERS["qwen2_vl"]


def build_family_tokenizer(family: str):
    """A byte-level BPE tokenizer (vocab ~600) with the family's special tokens as single ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials, bos, eos, pad, named = TOKENIZERS[family]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS + ["USER: ASSISTANT: Describe the image. What is in this picture? audio"] * 20,
                            trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad,
                                   extra_special_tokens=named, clean_up_tokenization_spaces=False)


def _text_kwargs(tokenizer) -> dict:
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": HIDDEN,
        "intermediate_size": HIDDEN * 2,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 1024,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def _image_processor(pil_name: str, tv_name: str, **kwargs):
    """The torchvision-backed image processor when torchvision imports, else the Pillow one."""
    import transformers

    cls = getattr(transformers, tv_name if has_torchvision() else pil_name)
    return cls(**kwargs)


def _clip_vision(image_size: int = 32, patch_size: int = 8):
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                            image_size=image_size, patch_size=patch_size, projection_dim=32)


def _llava(tokenizer):
    from transformers import LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    config = LlavaConfig(vision_config=_clip_vision(), text_config=LlamaConfig(**_text_kwargs(tokenizer)),
                         image_token_index=tokenizer.convert_tokens_to_ids("<image>"), image_seq_length=16,
                         vision_feature_layer=-1, vision_feature_select_strategy="default")
    image_processor = _image_processor("CLIPImageProcessorPil", "CLIPImageProcessor", size={"shortest_edge": 32},
                                       crop_size={"height": 32, "width": 32})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=8,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=VICUNA_TEMPLATE)
    return LlavaForConditionalGeneration(config), processor


def _llava_next(tokenizer):
    from transformers import (
        LlamaConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextProcessor,
    )

    config = LlavaNextConfig(vision_config=_clip_vision(), text_config=LlamaConfig(**_text_kwargs(tokenizer)),
                             image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
                             image_grid_pinpoints=[[32, 32], [32, 64], [64, 32]], vision_feature_layer=-1,
                             vision_feature_select_strategy="default")
    image_processor = _image_processor("LlavaNextImageProcessorPil", "LlavaNextImageProcessor",
                                       size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                       image_grid_pinpoints=[[32, 32], [32, 64], [64, 32]])
    processor = LlavaNextProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=8,
                                   vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                   chat_template=VICUNA_TEMPLATE)
    return LlavaNextForConditionalGeneration(config), processor


def _qwen_vl(tokenizer, version: str):
    import transformers

    ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    text = dict(_text_kwargs(tokenizer), rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                          "mrope_section": [2, 3, 3]})
    if version == "qwen2_vl":
        vision = {"depth": 2, "embed_dim": 32, "hidden_size": HIDDEN, "num_heads": 2, "mlp_ratio": 2,
                  "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2}
        config = transformers.Qwen2VLConfig(text_config=text, vision_config=vision, **ids)
        model = transformers.Qwen2VLForConditionalGeneration(config)
        processor_cls = transformers.Qwen2VLProcessor
    else:
        vision = {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "out_hidden_size": HIDDEN, "num_heads": 2,
                  "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 56,
                  "fullatt_block_indexes": [1]}
        config = transformers.Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids)
        model = transformers.Qwen2_5_VLForConditionalGeneration(config)
        processor_cls = transformers.Qwen2_5_VLProcessor
    pixels = {"min_pixels": 56 * 56, "max_pixels": 112 * 112}
    image_processor = transformers.Qwen2VLImageProcessor(size={"shortest_edge": pixels["min_pixels"],
                                                               "longest_edge": pixels["max_pixels"]},
                                                         patch_size=14, merge_size=2, temporal_patch_size=2)
    video_processor = transformers.Qwen2VLVideoProcessor(size={"shortest_edge": pixels["min_pixels"],
                                                               "longest_edge": pixels["max_pixels"]},
                                                         patch_size=14, merge_size=2, temporal_patch_size=2)
    processor = processor_cls(image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
                              chat_template=QWEN_VL_TEMPLATE)
    return model, processor


def _gemma3(tokenizer):
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3Processor, SiglipVisionConfig

    text = dict(_text_kwargs(tokenizer), head_dim=16, query_pre_attn_scalar=16, sliding_window=64,
                layer_types=["sliding_attention", "full_attention"])
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                image_size=32, patch_size=8)
    config = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4,
                          boi_token_index=tokenizer.convert_tokens_to_ids("<start_of_image>"),
                          eoi_token_index=tokenizer.convert_tokens_to_ids("<end_of_image>"),
                          image_token_index=tokenizer.convert_tokens_to_ids("<image_soft_token>"))
    image_processor = _image_processor("Gemma3ImageProcessorPil", "Gemma3ImageProcessor",
                                       size={"height": 32, "width": 32})
    processor = Gemma3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_length=4,
                                chat_template=GEMMA3_TEMPLATE)
    return Gemma3ForConditionalGeneration(config), processor


def _qwen2_audio(tokenizer):
    from transformers import (
        Qwen2AudioConfig,
        Qwen2AudioEncoderConfig,
        Qwen2AudioForConditionalGeneration,
        Qwen2AudioProcessor,
        Qwen2Config,
        WhisperFeatureExtractor,
    )

    audio = Qwen2AudioEncoderConfig(num_mel_bins=128, encoder_layers=2, encoder_attention_heads=2,
                                    encoder_ffn_dim=64, d_model=32, max_source_positions=1500)
    config = Qwen2AudioConfig(audio_config=audio, text_config=Qwen2Config(**_text_kwargs(tokenizer)),
                              audio_token_index=tokenizer.convert_tokens_to_ids("<|AUDIO|>"))
    features = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000)
    processor = Qwen2AudioProcessor(feature_extractor=features, tokenizer=tokenizer, chat_template=QWEN_AUDIO_TEMPLATE)
    return Qwen2AudioForConditionalGeneration(config), processor


def _mllama(tokenizer):
    from transformers import MllamaConfig, MllamaForConditionalGeneration, MllamaProcessor

    text = dict(_text_kwargs(tokenizer), num_hidden_layers=2, cross_attention_layers=[1], rope_parameters=None)
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_global_layers": 1,
              "attention_heads": 2, "image_size": 32, "patch_size": 8, "max_num_tiles": 4,
              "vision_output_dim": 64, "intermediate_layers_indices": [0]}
    config = MllamaConfig(text_config=text, vision_config=vision,
                          image_token_index=tokenizer.convert_tokens_to_ids("<|image|>"))
    image_processor = _image_processor("MllamaImageProcessorPil", "MllamaImageProcessor",
                                       size={"height": 32, "width": 32}, max_image_tiles=4)
    processor = MllamaProcessor(image_processor=image_processor, tokenizer=tokenizer, chat_template=MLLAMA_TEMPLATE)
    return MllamaForConditionalGeneration(config), processor


BUILDERS = {
    "llava": _llava,
    "llava_next": _llava_next,
    "qwen2_vl": lambda tok: _qwen_vl(tok, "qwen2_vl"),
    "qwen2_5_vl": lambda tok: _qwen_vl(tok, "qwen2_5_vl"),
    "gemma3": _gemma3,
    "qwen2_audio": _qwen2_audio,
    "mllama": _mllama,
}


def build_tiny_vlm(family: str, out_dir: str | Path, *, seed: int = 0) -> Path:
    """Write a tiny random ``family`` model + processor to ``out_dir`` and return the folder.

    ``family`` is one of ``FAMILIES``. Raises ImportError for a Qwen-VL family without torchvision.
    """
    import torch
    from transformers import GenerationConfig

    if family not in BUILDERS:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    if family in NEEDS_TORCHVISION and not has_torchvision():
        raise ImportError(f"the {family} processor needs torchvision (transformers 5)")
    out = Path(out_dir)
    tokenizer = build_family_tokenizer(family)
    torch.manual_seed(seed)
    model, processor = BUILDERS[family](tokenizer)
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id,
                                               eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
