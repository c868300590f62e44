"""GGUF export round trip: the file loads back through transformers' GGUF loader unchanged.

Bounds, measured on the tiny random models (logits of magnitude < 1):
f32 exact (same weights), f16 / bf16 within 5e-3, q8_0 within 2% of the largest logit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tunery.config import parse_config
from tunery.errors import ModelError

TEXTS = [
    "What is the capital of France? The capital of France is Paris.",
    "你好，请问你是谁？ 1 2 3 + 4",
    "def add(a, b):\n    return a + b\n",
    "  leading spaces and\ttabs",
]
MESSAGES = [{"role": "user", "content": "Write a short poem about the sea."}]


def make_adapter(base: Path, out: Path, seed: int) -> Path:
    """A LoRA adapter with non-zero B, so merging it changes the model."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    peft_model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base),
        LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False),
    )
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    peft_model.save_pretrained(out)
    return out


def export_gguf(base: Path, out: Path, gguf_type: str, adapter: Path | None = None):
    from tunery.export.workflow import run_export

    raw = {"model_name_or_path": str(base), "export_dir": str(out), "export_format": "gguf", "export_gguf_type": gguf_type}
    if adapter is not None:
        raw["adapter_name_or_path"] = str(adapter)
    return run_export(parse_config("export", raw))


def merged_reference(base: Path, adapter: Path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter).merge_and_unload().eval()


def load_gguf(result):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = result.gguf_file.parent, result.gguf_file.name
    return (AutoModelForCausalLM.from_pretrained(folder, gguf_file=name).eval(),
            AutoTokenizer.from_pretrained(folder, gguf_file=name))


def prompt_ids(tokenizer) -> torch.Tensor:
    text = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    return torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])


@pytest.fixture(scope="module")
def adapter(tiny_chatml_model, tmp_path_factory) -> Path:
    return make_adapter(tiny_chatml_model, tmp_path_factory.mktemp("gguf-adapter") / "lora", 3)


@pytest.fixture(scope="module")
def f32_export(tiny_chatml_model, adapter, tmp_path_factory):
    return export_gguf(tiny_chatml_model, tmp_path_factory.mktemp("gguf") / "tiny-chat", "f32", adapter)


def test_f32_round_trip_is_exact(tiny_chatml_model, adapter, f32_export):
    from transformers import AutoTokenizer

    reference = merged_reference(tiny_chatml_model, adapter)
    source_tokenizer = AutoTokenizer.from_pretrained(tiny_chatml_model)
    model, tokenizer = load_gguf(f32_export)
    ids = prompt_ids(source_tokenizer)
    assert torch.equal(ids, prompt_ids(tokenizer))
    with torch.no_grad():
        expected, got = reference(ids).logits, model(ids).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    gen = {"max_new_tokens": 12, "do_sample": False, "pad_token_id": source_tokenizer.pad_token_id}
    assert torch.equal(model.generate(ids, **gen), reference.generate(ids, **gen))


def test_tokenizer_and_chat_template_survive(tiny_chatml_model, f32_export):
    from transformers import AutoTokenizer

    source = AutoTokenizer.from_pretrained(tiny_chatml_model)
    _, tokenizer = load_gguf(f32_export)
    for text in TEXTS + [source.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)]:
        assert tokenizer(text)["input_ids"] == source(text)["input_ids"], text
    assert tokenizer.chat_template == source.chat_template
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == source.pad_token


def test_gguf_metadata_names_specials_and_types(f32_export):
    from gguf import GGUFReader, TokenType

    reader = GGUFReader(f32_export.gguf_file)
    field = reader.fields["tokenizer.ggml.tokens"]
    tokens = [bytes(field.parts[i]).decode() for i in field.data]
    types = reader.fields["tokenizer.ggml.token_type"]
    type_of = dict(zip(tokens, (int(types.parts[i][0]) for i in types.data)))
    assert type_of["<|im_end|>"] == TokenType.CONTROL and type_of["<|im_start|>"] == TokenType.CONTROL
    eos = int(reader.fields["tokenizer.ggml.eos_token_id"].parts[-1][0])
    assert tokens[eos] == "<|im_end|>"
    assert bytes(reader.fields["tokenizer.ggml.model"].parts[-1]).decode() == "gpt2"
    assert {t.name for t in reader.tensors} >= {"token_embd.weight", "output.weight", "blk.1.attn_q.weight"}
    modelfile = f32_export.modelfile.read_text()
    assert modelfile.startswith(f"FROM ./{f32_export.gguf_file.name}\n") and 'PARAMETER stop "<|im_end|>"' in modelfile


@pytest.mark.parametrize(("gguf_type", "bound"), [("f16", 5e-3), ("bf16", 5e-3), ("q8_0", None)])
def test_reduced_precision_logits_within_bound(tiny_llama_model, tmp_path, gguf_type, bound):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = export_gguf(tiny_llama_model, tmp_path / "tiny-llama", gguf_type)
    source = AutoTokenizer.from_pretrained(tiny_llama_model)
    reference = AutoModelForCausalLM.from_pretrained(tiny_llama_model).eval()
    model, tokenizer = load_gguf(result)
    ids = prompt_ids(source)
    assert torch.equal(ids, prompt_ids(tokenizer))
    assert ids[0, 0].item() == source.bos_token_id
    with torch.no_grad():
        expected, got = reference(ids).logits, model(ids).logits
    diff = (got - expected).abs().max().item()
    limit = bound if bound is not None else 0.02 * expected.abs().max().item()
    assert 0 < diff <= limit, f"{gguf_type}: max |logit diff| {diff:.2e} > {limit:.2e}"


def test_q8_0_file_is_a_quarter_of_f32(tiny_llama_model, tmp_path):
    from gguf import GGMLQuantizationType, GGUFReader

    small = export_gguf(tiny_llama_model, tmp_path / "q8", "q8_0").gguf_file
    big = export_gguf(tiny_llama_model, tmp_path / "f32", "f32").gguf_file
    kinds = {t.name: t.tensor_type for t in GGUFReader(small).tensors}
    assert kinds["blk.0.ffn_down.weight"] == GGMLQuantizationType.Q8_0
    assert kinds["blk.0.attn_norm.weight"] == GGMLQuantizationType.F32
    assert small.stat().st_size < 0.4 * big.stat().st_size


def test_qk_permutation_is_what_transformers_reverses():
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    from tunery.export.gguf_writer import permute_qk

    rng = np.random.default_rng(0)
    q = rng.standard_normal((4 * 8, 16)).astype(np.float32)  # 4 heads of dim 8
    k = rng.standard_normal((2 * 8, 16)).astype(np.float32)  # 2 kv heads
    processor = LlamaTensorProcessor({"num_attention_heads": 4, "num_key_value_heads": 2})
    assert not np.array_equal(permute_qk(q, 4), q)
    np.testing.assert_array_equal(processor.process(permute_qk(q, 4), "blk.0.attn_q.weight").weights, q)
    np.testing.assert_array_equal(processor.process(permute_qk(k, 2), "blk.0.attn_k.weight").weights, k)


def test_unsupported_architecture_is_a_clear_error(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from tests.fixtures.tiny_models import build_tokenizer
    from tunery.export.gguf_writer import write_gguf

    tokenizer = build_tokenizer("chatml")
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2))
    with pytest.raises(ModelError, match="llama-architecture"):
        write_gguf(model, tokenizer, tmp_path / "x.gguf", "f16")
    assert not (tmp_path / "x.gguf").exists()


def build_sentencepiece_style(path: Path) -> Path:
    """A tiny Llama-2-style model: SentencePiece-style BPE (▁ spaces, <0xNN> byte fallback), tied embeddings."""
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaTokenizer

    from tests.fixtures.tiny_models import CORPUS

    trained = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    trained.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
    trained.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"],
                                                            show_progress=False))
    spec = json.loads(trained.to_str())["model"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"<0x{b:02X}>": 3 + b for b in range(256)}}
    for token, _ in sorted(spec["vocab"].items(), key=lambda item: item[1]):
        vocab.setdefault(token, len(vocab))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in spec["merges"]]
    tokenizer = LlamaTokenizer(vocab=vocab, merges=merges)
    tokenizer.chat_template = (
        "{% for m in messages %}{{ '<|' + m['role'] + '|>\n' + m['content'] + eos_token + '\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, bos_token_id=1, eos_token_id=2, tie_word_embeddings=True,
    ))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_sentencepiece_style_vocab_and_tied_embeddings_round_trip(tmp_path):
    from gguf import GGUFReader, TokenType
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = build_sentencepiece_style(tmp_path / "spm")
    result = export_gguf(base, tmp_path / "spm-out", "f32")
    reader = GGUFReader(result.gguf_file)
    assert bytes(reader.fields["tokenizer.ggml.model"].parts[-1]).decode() == "llama"
    assert "output.weight" not in {t.name for t in reader.tensors}  # tied: llama.cpp reuses token_embd
    types = reader.fields["tokenizer.ggml.token_type"]
    assert int(types.parts[types.data[3 + 0x41]][0]) == TokenType.BYTE  # <0x41>
    source = AutoTokenizer.from_pretrained(base)
    model, tokenizer = load_gguf(result)
    assert model.config.tie_word_embeddings
    chat = source.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    for text in TEXTS + [chat]:
        assert tokenizer(text)["input_ids"] == source(text)["input_ids"], text
    ids = torch.tensor([source(chat)["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, AutoModelForCausalLM.from_pretrained(base)(ids).logits,
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["qwen2", "mistral"])
def test_other_llama_family_architectures_round_trip(arch, tmp_path):
    """Qwen2 (q/k/v biases, no Q/K permutation, tied embeddings) and Mistral (written as llama)."""
    from gguf import GGUFReader
    from transformers import (
        AutoModelForCausalLM,
        MistralConfig,
        MistralForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    from tests.fixtures.tiny_models import build_tokenizer
    from tunery.export.gguf_writer import write_gguf

    tokenizer = build_tokenizer("chatml")
    sizes = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    torch.manual_seed(0)
    if arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**sizes, tie_word_embeddings=True))
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith("bias"):
                    param.normal_(0, 0.1)  # zero biases would hide a dropped or misplaced bias
    else:
        model = MistralForCausalLM(MistralConfig(**sizes, sliding_window=None))
    path = write_gguf(model.eval(), tokenizer, tmp_path / f"{arch}.gguf", "f32", chat_template=tokenizer.chat_template)
    assert GGUFReader(path).fields["general.architecture"].contents() == ("qwen2" if arch == "qwen2" else "llama")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name).eval()
    ids = torch.tensor([tokenizer(TEXTS[0])["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, atol=1e-5, rtol=1e-5)


def test_llama31_rope_scaling_is_written_as_rope_freqs(tmp_path):
    """llama.cpp divides the unscaled frequencies by rope_freqs: that must give the model's own inv_freq."""
    from gguf import GGUFReader
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.fixtures.tiny_models import build_tokenizer
    from tunery.export.gguf_writer import write_gguf

    tokenizer = build_tokenizer("llama")
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=131072,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    )
    model = LlamaForCausalLM(config)
    path = write_gguf(model, tokenizer, tmp_path / "l31.gguf", "f16")
    tensors = {t.name: t for t in GGUFReader(path).tensors}
    factors = torch.from_numpy(np.array(tensors["rope_freqs.weight"].data, dtype=np.float32))
    head_dim = 16
    unscaled = 1.0 / (500000.0 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    assert factors[0] == 1.0 and factors[-1] == 8.0  # high frequencies kept, low ones stretched by the factor
    torch.testing.assert_close(unscaled / factors, model.model.rotary_emb.inv_freq.float(), rtol=1e-6, atol=0)
