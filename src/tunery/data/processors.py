"""Processors: canonical records -> token ids and labels, one function per stage.

Labels are -100 where a token is not trained. The template decides the text and which tokens
belong to assistant turns (``Encoded.turns``); this module only decides, per stage, which of those
turns are trained and how an over-long example is cut. Every batch function returns a ``_status``
column (OK / TRUNCATED / REPLY_CUT / FAILED) and an ``_error`` column so counts and reasons survive
``datasets.map`` worker processes; rows whose reply was cut away entirely, or that the template
rejects, are dropped afterwards and counted, never trained on silently and never a crash.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tunery.data.converters import ASSISTANT, FUNCTION_CALL, SYSTEM
from tunery.errors import ConfigError, TuneryError

IGNORE_INDEX = -100
OK, TRUNCATED, REPLY_CUT, FAILED = 0, 1, 2, 3
PAIRWISE_STAGES = ("rm", "dpo", "orpo", "simpo")
STAGE_KIND = {"pt": "pt", "sft": "sft", "rm": "pairwise", "dpo": "pairwise", "orpo": "pairwise",
              "simpo": "pairwise", "kto": "kto", "unsupervised": "unsupervised", "ppo": "unsupervised",
              "grpo": "unsupervised", "predict": "unsupervised", "pairwise": "pairwise"}


@dataclass(frozen=True)
class ProcessSettings:
    """What changes the token ids of one example (and so belongs in the cache key)."""

    cutoff_len: int = 2048
    train_on_prompt: bool = False
    mask_history: bool = False
    packing: bool = False


def stage_kind(stage: str) -> str:
    """The processor family of a training stage (rm/dpo/orpo/simpo share 'pairwise')."""
    try:
        return STAGE_KIND[stage]
    except KeyError:
        raise ConfigError(f"no data processor for stage '{stage}'",
                          hint=f"known stages: {', '.join(STAGE_KIND)}") from None


def _records(batch: dict[str, list]) -> list[dict[str, Any]]:
    n = len(batch["messages"])
    return [{key: batch[key][i] for key in batch} for i in range(n)]


# ---------------------------------------------------------------- sft

def sft_labels(input_ids: list[int], turns: list[int], settings: ProcessSettings) -> list[int]:
    """Every assistant turn is trained; ``mask_history`` keeps only the last; ``train_on_prompt`` adds the prompt."""
    last = max(turns, default=-1)
    labels = []
    for token, turn in zip(input_ids, turns):
        if turn >= 0:
            trained = turn == last or not settings.mask_history
        else:
            trained = settings.train_on_prompt
        labels.append(token if trained else IGNORE_INDEX)
    return labels


def encode_sft(record: dict[str, Any], tokenizer, template, settings: ProcessSettings) -> tuple[list[int], list[int], int]:
    """(input_ids, labels, status) of one conversation, cut to ``cutoff_len`` keeping replies where it can.

    Over-long: cut from the right when some trained token survives; otherwise drop the oldest
    exchanges (keeping the system prompt) and retry; when even the last exchange leaves no trained
    token within ``cutoff_len`` the example is REPLY_CUT.
    """
    messages = list(record["messages"])
    tools = record.get("tools")
    status = OK
    while True:
        enc = template.encode(tokenizer, messages, tools)
        ids, labels = enc.input_ids, sft_labels(enc.input_ids, enc.turns, settings)
        if len(ids) <= settings.cutoff_len:
            return ids, labels, status
        status = TRUNCATED
        cut_labels = labels[: settings.cutoff_len]
        if any(label != IGNORE_INDEX and turn >= 0 for label, turn in zip(cut_labels, enc.turns)):
            return ids[: settings.cutoff_len], cut_labels, status
        shorter = drop_oldest_exchange(messages)
        if shorter is None:
            return [], [], REPLY_CUT
        messages = shorter


def drop_oldest_exchange(messages: list[dict[str, str]]) -> list[dict[str, str]] | None:
    """The conversation without its first user..assistant exchange, or None if only one is left."""
    head = [m for m in messages[:1] if m["role"] == SYSTEM]
    body = messages[len(head):]
    replies = [i for i, m in enumerate(body) if m["role"] in (ASSISTANT, FUNCTION_CALL)]
    if len(replies) < 2:
        return None
    # the next exchange starts after the first run of assistant/function turns
    i = replies[0]
    while i < len(body) and body[i]["role"] in (ASSISTANT, FUNCTION_CALL):
        i += 1
    return head + body[i:] if i < len(body) else None


def process_sft(batch: dict[str, list], *, tokenizer, template, settings: ProcessSettings) -> dict[str, list]:
    out: dict[str, list] = {"input_ids": [], "attention_mask": [], "labels": [], "_status": []}
    for record in _records(batch):
        ids, labels, status = encode_sft(record, tokenizer, template, settings)
        out["input_ids"].append(ids)
        out["attention_mask"].append([1] * len(ids))
        out["labels"].append(labels)
        out["_status"].append(status)
    return out


# ---------------------------------------------------------------- pt

def document_text(record: dict[str, Any]) -> str:
    """A pre-training document: the text of every non-system message, joined by newlines."""
    return "\n".join(m["content"] for m in record["messages"] if m["role"] != SYSTEM and m["content"])


def document_ids(text: str, tokenizer) -> list[int]:
    """bos (when the tokenizer has one) + text + eos, so documents stay separable once concatenated."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if tokenizer.bos_token_id is not None:
        ids = [tokenizer.bos_token_id, *ids]
    if tokenizer.eos_token_id is not None:
        ids = [*ids, tokenizer.eos_token_id]
    return ids


def process_pt(batch: dict[str, list], *, tokenizer, template, settings: ProcessSettings) -> dict[str, list]:
    """With packing: each document in ``cutoff_len`` pieces (packed later without cross-attention).
    Without: the documents of the batch concatenated and cut into ``cutoff_len`` blocks (LLaMA-Factory's pt).
    """
    docs = [document_ids(document_text(r), tokenizer) for r in _records(batch)]
    size = settings.cutoff_len
    if settings.packing:
        pieces = [doc[i: i + size] for doc in docs for i in range(0, len(doc), size)]
        status = [OK] * len(pieces)  # a long document is split, not cut: nothing is lost
    else:
        stream = [token for doc in docs for token in doc]
        pieces = [stream[i: i + size] for i in range(0, len(stream), size)]
        status = [OK] * len(pieces)
    return {"input_ids": pieces, "attention_mask": [[1] * len(p) for p in pieces], "labels": [list(p) for p in pieces],
            "_status": status}


# ---------------------------------------------------------------- pairwise and kto

def split_last_turn(enc) -> tuple[list[int], list[int]]:
    """(prompt ids, reply ids): the reply is the last trained turn up to its last trained token."""
    last = max(enc.turns, default=-1)
    positions = [i for i, t in enumerate(enc.turns) if t == last and last >= 0]
    if not positions:
        return list(enc.input_ids), []
    return list(enc.input_ids[: positions[0]]), list(enc.input_ids[positions[0]: positions[-1] + 1])


def fit_prompt_and_replies(prompt: list[int], replies: list[list[int]], cutoff: int) -> tuple[list[int], list[list[int]], int]:
    """Keep prompt + longest reply within ``cutoff``: replies keep at least half, the prompt keeps its end."""
    longest = max((len(r) for r in replies), default=0)
    if len(prompt) + longest <= cutoff:
        return prompt, replies, OK
    reply_budget = min(longest, max(cutoff - len(prompt), cutoff // 2))
    prompt_budget = cutoff - reply_budget
    prompt = prompt[len(prompt) - prompt_budget:] if prompt_budget > 0 else []
    return prompt, [r[:reply_budget] for r in replies], TRUNCATED


def common_prefix_len(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def encode_pairwise(record: dict[str, Any], tokenizer, template, settings: ProcessSettings) -> dict[str, Any]:
    messages, tools = list(record["messages"]), record.get("tools")
    chosen_enc = template.encode(tokenizer, [*messages, record["chosen"]], tools)
    rejected_enc = template.encode(tokenizer, [*messages, record["rejected"]], tools)
    prompt_c, chosen = split_last_turn(chosen_enc)
    prompt_r, rejected = split_last_turn(rejected_enc)
    # One shared prompt; a token merged across the prompt/reply border moves into the replies.
    n = common_prefix_len(prompt_c, prompt_r)
    prompt = prompt_c[:n]
    chosen, rejected = prompt_c[n:] + chosen, prompt_r[n:] + rejected
    prompt, (chosen, rejected), status = fit_prompt_and_replies(prompt, [chosen, rejected], settings.cutoff_len)
    if not chosen or not rejected:
        status = REPLY_CUT
    return {"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected, "_status": status}


def process_pairwise(batch: dict[str, list], *, tokenizer, template, settings: ProcessSettings) -> dict[str, list]:
    keys = ["prompt_ids", "chosen_ids", "rejected_ids", "chosen_input_ids", "chosen_attention_mask", "chosen_labels",
            "rejected_input_ids", "rejected_attention_mask", "rejected_labels", "_status"]
    out: dict[str, list] = {k: [] for k in keys}
    for record in _records(batch):
        ex = encode_pairwise(record, tokenizer, template, settings)
        prompt = ex["prompt_ids"]
        for key in ("prompt_ids", "chosen_ids", "rejected_ids", "_status"):
            out[key].append(ex[key])
        for side in ("chosen", "rejected"):
            reply = ex[f"{side}_ids"]
            out[f"{side}_input_ids"].append(prompt + reply)
            out[f"{side}_attention_mask"].append([1] * (len(prompt) + len(reply)))
            out[f"{side}_labels"].append([IGNORE_INDEX] * len(prompt) + reply)
    return out


def process_kto(batch: dict[str, list], *, tokenizer, template, settings: ProcessSettings) -> dict[str, list]:
    """KTO: prompt + one reply with its desirable/undesirable ``label`` (trl's column names)."""
    keys = ["prompt_ids", "completion_ids", "label", "input_ids", "attention_mask", "labels", "_status"]
    out: dict[str, list] = {k: [] for k in keys}
    for record in _records(batch):
        enc = template.encode(tokenizer, record["messages"], record.get("tools"))
        prompt, reply = split_last_turn(enc)
        prompt, (reply,), status = fit_prompt_and_replies(prompt, [reply], settings.cutoff_len)
        if not reply:
            status = REPLY_CUT
        out["prompt_ids"].append(prompt)
        out["completion_ids"].append(reply)
        out["label"].append(bool(record["kto_tag"]))
        out["input_ids"].append(prompt + reply)
        out["attention_mask"].append([1] * (len(prompt) + len(reply)))
        out["labels"].append([IGNORE_INDEX] * len(prompt) + reply)
        out["_status"].append(status)
    return out


# ---------------------------------------------------------------- unsupervised (prediction)

def process_unsupervised(batch: dict[str, list], *, tokenizer, template, settings: ProcessSettings) -> dict[str, list]:
    """Prompt only, ending with the generation prompt; ``labels`` are the reference reply's ids (may be empty).

    An over-long prompt keeps its end (the question and the generation prompt are what matter).
    """
    out: dict[str, list] = {"input_ids": [], "attention_mask": [], "labels": [], "_status": []}
    for record in _records(batch):
        messages = list(record["messages"])
        reference = ""
        if messages and messages[-1]["role"] in (ASSISTANT, FUNCTION_CALL):
            reference = messages.pop()["content"]
        ids = template.prompt_ids(tokenizer, messages, record.get("tools"))
        status = OK
        if len(ids) > settings.cutoff_len:
            ids, status = ids[len(ids) - settings.cutoff_len:], TRUNCATED
        out["input_ids"].append(ids)
        out["attention_mask"].append([1] * len(ids))
        out["labels"].append(tokenizer(reference, add_special_tokens=False)["input_ids"] if reference else [])
        out["_status"].append(status)
    return out


PROCESSORS = {"pt": process_pt, "sft": process_sft, "pairwise": process_pairwise, "kto": process_kto,
              "unsupervised": process_unsupervised}

# Columns of the tokenized dataset per stage family (``position_ids`` is added to packed rows).
COLUMNS = {
    "pt": ["input_ids", "attention_mask", "labels"],
    "sft": ["input_ids", "attention_mask", "labels"],
    "pairwise": ["prompt_ids", "chosen_ids", "rejected_ids", "chosen_input_ids", "chosen_attention_mask",
                 "chosen_labels", "rejected_input_ids", "rejected_attention_mask", "rejected_labels"],
    "kto": ["prompt_ids", "completion_ids", "label", "input_ids", "attention_mask", "labels"],
    "unsupervised": ["input_ids", "attention_mask", "labels"],
}


def process_batch(batch: dict[str, list], *, stage: str, tokenizer, template, settings: ProcessSettings) -> dict[str, list]:
    """The ``datasets.map`` function: canonical records in, the stage's columns plus ``_status``/``_error`` out.

    When the template rejects an example (e.g. a chat template that refuses a role), the batch is
    redone one example at a time and the rejected ones become FAILED rows carrying the reason.
    """
    kind = stage_kind(stage)
    fn = PROCESSORS[kind]
    try:
        out = fn(batch, tokenizer=tokenizer, template=template, settings=settings)
        out["_error"] = [""] * len(out["_status"])
        return out
    except TuneryError:
        pass
    merged: dict[str, list] = {key: [] for key in [*COLUMNS[kind], "_status", "_error"]}
    for i in range(len(batch["messages"])):
        single = {key: [values[i]] for key, values in batch.items()}
        try:
            out = fn(single, tokenizer=tokenizer, template=template, settings=settings)
            out["_error"] = [""] * len(out["_status"])
        except TuneryError as exc:
            source = (single.get("_source") or [None])[0] or {}
            where = f"{source.get('file', '?')} row {source.get('row', '?')}"
            out = {key: [False if key == "label" else []] for key in COLUMNS[kind]}
            out.update({"_status": [FAILED], "_error": [f"{where}: {exc.message}"]})
        for key in merged:
            merged[key] += out[key]
    return merged
