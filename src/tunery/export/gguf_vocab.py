"""A Hugging Face tokenizer as the vocabulary metadata llama.cpp reads from a GGUF file.

gguf's own vocab classes (``gguf.vocab.BpeVocab`` / ``LlamaHfVocab``) read a tokenizer folder and
mark only tokens above the base vocabulary as special; Tunery's tokenizers (and many trained
ones) keep their special tokens inside the base vocabulary, where those classes would write them
as normal text and llama.cpp would cut ``<|im_end|>`` into pieces. So the token table is built here
from the live tokenizer: every id, its type from ``added_tokens_decoder``, merges in priority order,
and for SentencePiece-style vocabularies scores that rank tokens the way the merges do.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tunery.errors import ModelError
from tunery.logging import get_logger

if TYPE_CHECKING:
    from gguf import GGUFWriter
    from transformers import PreTrainedTokenizerBase

logger = get_logger(__name__)

# llama.cpp picks its pre-tokenizer regex by this name (tokenizer.ggml.pre).
_LLAMA3_REGEX_START = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}"
_QWEN2_REGEX_START = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}|"
_BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")


@dataclass
class GgufVocab:
    """Everything llama.cpp needs to tokenize like the Hugging Face tokenizer does."""

    model: str  # "gpt2" (byte-level BPE) or "llama" (SentencePiece-style BPE with byte fallback)
    pre: str  # llama.cpp pre-tokenizer name
    tokens: list[str]
    scores: list[float]
    types: list[int]
    merges: list[str]
    special_ids: dict[str, int] = field(default_factory=dict)  # bos, eos, unk, pad, eot
    add_bos: bool = False
    add_eos: bool = False
    add_space_prefix: bool | None = None

    def add_to(self, writer: GGUFWriter) -> None:
        writer.add_tokenizer_model(self.model)
        writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        writer.add_token_scores(self.scores)
        writer.add_token_types(self.types)
        if self.merges:
            writer.add_token_merges(self.merges)
        for kind, token_id in self.special_ids.items():
            getattr(writer, f"add_{kind}_token_id")(token_id)
        writer.add_add_bos_token(self.add_bos)
        writer.add_add_eos_token(self.add_eos)
        if self.add_space_prefix is not None:
            writer.add_add_space_prefix(self.add_space_prefix)


def _backend_json(tokenizer: PreTrainedTokenizerBase) -> dict:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ModelError(
            f"{type(tokenizer).__name__} has no fast (Rust) tokenizer, which GGUF export reads",
            hint="set use_fast_tokenizer: true (the default) or convert the tokenizer with transformers first",
        )
    return json.loads(backend.to_str())


def _merges(model_json: dict) -> list[str]:
    """Merges as ``"a b"`` strings (llama.cpp's format); a space inside a part is shifted by 256
    the same way gguf's SpecialVocab does, so the pair stays splittable."""
    out = []
    for merge in model_json.get("merges") or []:
        if isinstance(merge, str):
            out.append(merge)
        else:
            out.append(" ".join("".join(chr(ord(c) + 256) if c == " " else c for c in part) for part in merge))
    return out


def _pre_tokenizer_name(pre_json: dict | None) -> str:
    """The llama.cpp pre-tokenizer matching the Hugging Face one (split regex + byte level)."""
    if not pre_json:
        return "default"
    parts = pre_json.get("pretokenizers") if pre_json.get("type") == "Sequence" else [pre_json]
    kinds = [p.get("type") for p in parts]
    if kinds == ["ByteLevel"] and parts[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and parts[0].get("individual_digits") and parts[1].get("use_regex", True):
        return "smollm"
    if kinds and kinds[0] == "Split":
        pattern = parts[0].get("pattern", {}).get("Regex", "")
        if pattern.startswith(_LLAMA3_REGEX_START):
            return "llama-bpe"
        if pattern.startswith(_QWEN2_REGEX_START):
            return "qwen2"
    logger.warning(
        "the tokenizer's pre-tokenizer (%s) has no known llama.cpp name; writing 'default', so llama.cpp may "
        "split some text differently from transformers", kinds,
    )
    return "default"


def _adds_special(tokenizer: PreTrainedTokenizerBase) -> tuple[bool, bool]:
    """Whether encoding plain text adds BOS / EOS (llama.cpp must do the same)."""
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    return bool(ids) and bos is not None and ids[0] == bos, bool(ids) and eos is not None and ids[-1] == eos


def build_vocab(tokenizer: PreTrainedTokenizerBase, n_vocab: int, eot_token_id: int | None = None) -> GgufVocab:
    """The GGUF vocabulary for ``tokenizer``, padded with unused tokens to the model's ``n_vocab`` rows."""
    from gguf import TokenType

    spec = _backend_json(tokenizer)
    model_json = spec.get("model", {})
    if model_json.get("type") != "BPE":
        raise ModelError(
            f"GGUF export supports BPE tokenizers (byte-level or SentencePiece-style); this one is "
            f"{model_json.get('type')}",
            hint="export to safetensors instead (export_format: safetensors) and convert with llama.cpp's "
            "convert_hf_to_gguf.py",
        )
    sentencepiece = bool(model_json.get("byte_fallback"))
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    if len(tokenizer) > n_vocab:
        raise ModelError(
            f"the tokenizer has {len(tokenizer)} tokens but the model only {n_vocab} embeddings",
            hint="set resize_vocab: true when training with added tokens",
        )
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    merges = _merges(model_json)
    rank = {}
    if sentencepiece:
        # SentencePiece merges the pair whose result scores highest; the HF merge list is in
        # priority order, so score = -rank reproduces it.
        for i, merge in enumerate(merges):
            rank.setdefault(merge.replace(" ", ""), i)
    tokens, scores, types = [], [], []
    for i in range(n_vocab):
        text = by_id.get(i)
        if text is None:
            tokens.append(f"[PAD{i}]")
            scores.append(-1e4)
            types.append(TokenType.UNUSED)
            continue
        tokens.append(text)
        if i in added:
            types.append(TokenType.CONTROL if added[i].special else TokenType.USER_DEFINED)
            scores.append(0.0)
        elif sentencepiece and _BYTE_TOKEN.fullmatch(text):
            types.append(TokenType.BYTE)
            scores.append(0.0)
        elif i == tokenizer.unk_token_id:
            types.append(TokenType.UNKNOWN)
            scores.append(0.0)
        else:
            types.append(TokenType.NORMAL)
            scores.append(-float(rank.get(text, i)) if sentencepiece else 0.0)
    special_ids = {
        kind: token_id
        for kind, token_id in (
            ("bos", tokenizer.bos_token_id), ("eos", tokenizer.eos_token_id), ("unk", tokenizer.unk_token_id),
            ("pad", tokenizer.pad_token_id), ("eot", eot_token_id),
        )
        if token_id is not None
    }
    add_bos, add_eos = _adds_special(tokenizer)
    pre = "default" if sentencepiece else _pre_tokenizer_name(spec.get("pre_tokenizer"))
    space_prefix = None
    if sentencepiece:
        metaspace = spec.get("pre_tokenizer") or {}
        space_prefix = metaspace.get("type") == "Metaspace" and metaspace.get("prepend_scheme", "always") != "never"
    return GgufVocab(
        model="llama" if sentencepiece else "gpt2", pre=pre, tokens=tokens, scores=scores, types=[int(t) for t in types],
        merges=merges, special_ids=special_ids, add_bos=add_bos, add_eos=add_eos, add_space_prefix=space_prefix,
    )
