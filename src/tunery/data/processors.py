"""Processors: canonical records -> token ids and labels, one function per stage.

Labels are -100 where a token is not trained. The template decides the text and which tokens
belong to assistant turns (``Encoded.turns``); this module only decides, per stage, which of those
turns are trained. How an over-long example is cut is ONE policy for every stage and for
``tunery data check`` (:func:`truncation_budget`, applied by :func:`fit_prompt_and_replies`): the
reply is kept (at least half of ``cutoff_len``) and the prompt keeps its end; pt documents are split
into ``cutoff_len`` blocks, nothing lost. Every batch function returns a ``_status`` column (OK /
TRUNCATED / REPLY_CUT / FAILED) and an ``_error`` column so counts and reasons survive
``datasets.map`` worker processes; rows that cannot keep any reply token (REPLY_CUT, only when
``cutoff_len`` leaves no room at all) or that the template rejects are dropped afterwards and
counted with their cause, never trained on silently and never a crash.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tunery.data.converters import ASSISTANT, FUNCTION_CALL, SYSTEM
from tunery.data.media import KINDS, MediaEncoder, with_model_tokens
from tunery.errors import ConfigError, DataError, TuneryError

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


def _records(batch: dict[str, list], media: MediaEncoder | None = None, kind: str = "sft") -> list[dict[str, Any]]:
    n = len(batch["messages"])
    records = [{key: batch[key][i] for key in batch} for i in range(n)]
    for record in records:
        check_renderable(record, media, kind)
    return records


def has_media(record: dict[str, Any]) -> bool:
    return any(record.get(kind) for kind in KINDS)


def check_renderable(record: dict[str, Any], media: MediaEncoder | None = None, kind: str = "sft") -> None:
    """Raise DataError for a part of the record this run cannot train, so it is reported, never dropped silently.

    Media need the model's processor (``media``: a vision/audio model) and a stage that encodes them
    (sft and prediction); otherwise the pictures would vanish and the model would learn replies about
    images it never saw. (Tools, system and tool turns are checked by the template that renders them.)
    """
    if not has_media(record):
        return
    kinds = [k for k in KINDS if record.get(k)]
    if kind not in MEDIA_KINDS_OF_STAGE:
        raise DataError(f"the example has {' and '.join(kinds)}: multimodal data is not supported by Tunery's "
                        f"{kind} stages yet (they would train without the media)", field=kinds[0],
                        hint="train multimodal data with stage: sft")
    if media is None:
        raise DataError(f"the example has {' and '.join(kinds)}, but the model has no processor for them (a "
                        f"text-only model): the {' and '.join(kinds)} would be silently left out", field=kinds[0],
                        hint="use a vision/audio model, or remove the media columns from dataset_info.json")


MEDIA_KINDS_OF_STAGE = ("sft", "unsupervised", "pairwise", "kto")  # the stage decides (train/dpo.py, rm.py, kto.py)


def media_columns_of(record: dict[str, Any]) -> dict[str, list[str]]:
    """The record's media paths, kept beside the token ids for the collator (empty lists when none)."""
    return {kind: list(record.get(kind) or []) for kind in KINDS}


def encode_record(record: dict[str, Any], tokenizer, template, media: MediaEncoder | None,
                  messages: list[dict[str, str]] | None = None, add_generation_prompt: bool = False):
    """(input_ids, turns) of a conversation; with media, each placeholder becomes the model's media
    tokens, as many as its processor makes (turn -1: never trained)."""
    messages = record["messages"] if messages is None else messages
    if media is None or not has_media(record):
        enc = template.encode(tokenizer, messages, record.get("tools"), add_generation_prompt)
        return list(enc.input_ids), list(enc.turns)
    enc = template.encode(tokenizer, with_model_tokens(messages, media.processor), record.get("tools"),
                          add_generation_prompt)
    return media.expand(list(enc.input_ids), list(enc.turns), enc.text, record)


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


def last_turn_start(turns: list[int]) -> int | None:
    """Index of the first token of the last assistant turn (None when nothing is trained)."""
    last = max(turns, default=-1)
    if last < 0:
        return None
    return turns.index(last)


def encode_sft(record: dict[str, Any], tokenizer, template, settings: ProcessSettings,
               media: MediaEncoder | None = None) -> tuple[list[int], list[int], int]:
    """(input_ids, labels, status) of one conversation, cut to ``cutoff_len`` by the shared policy.

    The prompt is everything before the last assistant turn (earlier turns keep their labels), the
    reply is that turn to the end; :func:`fit_prompt_and_replies` keeps the reply and the prompt's
    end. Status TRUNCATED when anything was cut, REPLY_CUT (nothing returned) when no reply token fits.
    Media tokens are never trained (not even with ``train_on_prompt``) and never cut: an example
    whose media tokens do not fit ``cutoff_len`` is dropped (REPLY_CUT) with the reason.
    """
    ids, status, _ = _fit_sft(record, tokenizer, template, settings, media)
    return ids[0], ids[1], status


def _fit_sft(record: dict[str, Any], tokenizer, template, settings: ProcessSettings,
             media: MediaEncoder | None = None):
    ids, turns = encode_record(record, tokenizer, template, media)
    labels = sft_labels(ids, turns, settings)
    if media is not None:
        labels = [IGNORE_INDEX if t in media.token_ids else lab for t, lab in zip(ids, labels)]
    start = last_turn_start(turns)
    if start is None:
        return ([], []), REPLY_CUT, "the template renders no assistant reply to train on"
    prompt, (reply,), status = fit_prompt_and_replies(ids[:start], [ids[start:]], settings.cutoff_len)
    if status == REPLY_CUT:
        return ([], []), status, drop_reason(start, [len(ids) - start], settings.cutoff_len)
    lo, hi = start - len(prompt), start + len(reply)
    if media is not None and lo > 0 and media.count_media_tokens(ids[:lo]):
        return ([], []), REPLY_CUT, media_cut_reason(media.count_media_tokens(ids), len(ids), settings.cutoff_len)
    return (ids[lo:hi], labels[lo:hi]), status, ""


def media_cut_reason(media_tokens: int, total: int, cutoff_len: int) -> str:
    return (f"dropped: cutoff_len={cutoff_len} would cut into the example's {media_tokens} media tokens "
            f"(it needs {total} tokens); raise cutoff_len or lower image_max_pixels")


def process_sft(batch: dict[str, list], *, tokenizer, template, settings: ProcessSettings,
                media: MediaEncoder | None = None) -> dict[str, list]:
    out: dict[str, list] = {"input_ids": [], "attention_mask": [], "labels": [], "_status": [], "_error": []}
    if media is not None:
        out.update({kind: [] for kind in KINDS})
    for record in _records(batch, media, "sft"):
        (ids, labels), status, reason = _fit_sft(record, tokenizer, template, settings, media)
        out["input_ids"].append(ids)
        out["attention_mask"].append([1] * len(ids))
        out["labels"].append(labels)
        out["_status"].append(status)
        out["_error"].append(_where(record, reason))
        if media is not None:
            for kind, items in media_columns_of(record).items():
                out[kind].append(items)
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
    docs = [document_ids(document_text(r), tokenizer) for r in _records(batch, None, "pt")]
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


def truncation_budget(prompt_len: int, reply_lens: list[int], cutoff_len: int) -> tuple[int, int]:
    """THE truncation policy of every stage: (prompt tokens kept, reply tokens kept per reply).

    Everything fits: nothing is cut. Otherwise the replies keep up to ``max(cutoff_len - prompt_len,
    cutoff_len // 2)`` tokens (a short reply is kept whole, a long one keeps at least half the
    budget) and the prompt gets the rest, keeping its end (the question next to the reply). As in
    LLaMA-Factory, a long prompt never costs the example its reply. Lengths are token counts.
    """
    longest = max(reply_lens, default=0)
    if prompt_len + longest <= cutoff_len:
        return prompt_len, longest
    reply_budget = max(0, min(longest, max(cutoff_len - prompt_len, cutoff_len // 2)))
    return min(prompt_len, max(0, cutoff_len - reply_budget)), reply_budget


def fit_prompt_and_replies(prompt: list[int], replies: list[list[int]], cutoff: int) -> tuple[list[int], list[list[int]], int]:
    """Apply :func:`truncation_budget`: (prompt's end, replies' starts, status OK/TRUNCATED/REPLY_CUT).

    REPLY_CUT when a non-empty reply keeps no token (``cutoff`` too small for anything but prompt).
    """
    prompt_keep, reply_keep = truncation_budget(len(prompt), [len(r) for r in replies], cutoff)
    status = OK if prompt_keep == len(prompt) and all(len(r) <= reply_keep for r in replies) else TRUNCATED
    if any(r and reply_keep == 0 for r in replies):
        status = REPLY_CUT
    return prompt[len(prompt) - prompt_keep:], [r[:reply_keep] for r in replies], status


def drop_reason(prompt_len: int, reply_lens: list[int], cutoff_len: int) -> str:
    """Why an example is dropped by the truncation policy, with the numbers."""
    return (f"dropped: cutoff_len={cutoff_len} leaves no room for the reply "
            f"(prompt {prompt_len} tokens, reply {max(reply_lens, default=0)} tokens); raise cutoff_len")


def _where(record: dict[str, Any], reason: str) -> str:
    if not reason:
        return ""
    source = record.get("_source") or {}
    return f"{source.get('file', '?')} row {source.get('row', '?')}: {reason}"


def common_prefix_len(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def encode_pairwise(record: dict[str, Any], tokenizer, template, settings: ProcessSettings,
                    media: MediaEncoder | None = None) -> dict[str, Any]:
    messages = list(record["messages"])
    chosen_enc = _Enc(*encode_record(record, tokenizer, template, media, [*messages, record["chosen"]]))
    rejected_enc = _Enc(*encode_record(record, tokenizer, template, media, [*messages, record["rejected"]]))
    prompt_c, chosen = split_last_turn(chosen_enc)
    prompt_r, rejected = split_last_turn(rejected_enc)
    # One shared prompt; a token merged across the prompt/reply border moves into the replies.
    n = common_prefix_len(prompt_c, prompt_r)
    prompt = prompt_c[:n]
    chosen, rejected = prompt_c[n:] + chosen, prompt_r[n:] + rejected
    lengths = (len(prompt), [len(chosen), len(rejected)])
    full_prompt = prompt
    prompt, (chosen, rejected), status = fit_prompt_and_replies(prompt, [chosen, rejected], settings.cutoff_len)
    reason = ""
    if not chosen or not rejected:
        status = REPLY_CUT
        reason = drop_reason(*lengths, settings.cutoff_len)
    elif media is not None and media.count_media_tokens(prompt) != media.count_media_tokens(full_prompt):
        prompt, chosen, rejected, status = [], [], [], REPLY_CUT
        reason = media_cut_reason(media.count_media_tokens(full_prompt), sum(lengths[1]) + lengths[0],
                                  settings.cutoff_len)
    return {"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected, "_status": status,
            "_error": _where(record, reason)}


@dataclass
class _Enc:
    """(input_ids, turns) in the shape of the template's Encoded, for :func:`split_last_turn`."""

    input_ids: list[int]
    turns: list[int]


def process_pairwise(batch: dict[str, list], *, tokenizer, template, settings: ProcessSettings,
                     media: MediaEncoder | None = None) -> dict[str, list]:
    keys = ["prompt_ids", "chosen_ids", "rejected_ids", "chosen_input_ids", "chosen_attention_mask", "chosen_labels",
            "rejected_input_ids", "rejected_attention_mask", "rejected_labels", "_status", "_error"]
    out: dict[str, list] = {k: [] for k in keys}
    if media is not None:
        out.update({kind: [] for kind in KINDS})
    for record in _records(batch, media, "pairwise"):
        ex = encode_pairwise(record, tokenizer, template, settings, media)
        prompt = ex["prompt_ids"]
        for key in ("prompt_ids", "chosen_ids", "rejected_ids", "_status", "_error"):
            out[key].append(ex[key])
        for side in ("chosen", "rejected"):
            reply = ex[f"{side}_ids"]
            out[f"{side}_input_ids"].append(prompt + reply)
            out[f"{side}_attention_mask"].append([1] * (len(prompt) + len(reply)))
            out[f"{side}_labels"].append([IGNORE_INDEX] * len(prompt) + reply)
        if media is not None:
            for kind, items in media_columns_of(record).items():
                out[kind].append(items)
    return out


def process_kto(batch: dict[str, list], *, tokenizer, template, settings: ProcessSettings,
                media: MediaEncoder | None = None) -> dict[str, list]:
    """KTO: prompt + one reply with its desirable/undesirable ``label`` (trl's column names).

    With ``media`` the prompt holds the expanded media tokens (all of them, else the row is dropped)
    and the media paths are kept beside the ids: they belong to the prompt, also in KTO's KL pairs."""
    keys = ["prompt_ids", "completion_ids", "label", "input_ids", "attention_mask", "labels", "_status", "_error"]
    out: dict[str, list] = {k: [] for k in keys}
    if media is not None:
        out.update({kind: [] for kind in KINDS})
    for record in _records(batch, media, "kto"):
        prompt, reply = split_last_turn(_Enc(*encode_record(record, tokenizer, template, media)))
        lengths = (len(prompt), [len(reply)])
        full_prompt = prompt
        prompt, (reply,), status = fit_prompt_and_replies(prompt, [reply], settings.cutoff_len)
        reason = ""
        if not reply:
            status = REPLY_CUT
            reason = drop_reason(*lengths, settings.cutoff_len) if lengths[1][0] else "the template renders no reply"
        elif media is not None and media.count_media_tokens(prompt) != media.count_media_tokens(full_prompt):
            prompt, reply, status = [], [], REPLY_CUT
            reason = media_cut_reason(media.count_media_tokens(full_prompt), sum(lengths[1]) + lengths[0],
                                      settings.cutoff_len)
        out["_error"].append(_where(record, reason))
        out["prompt_ids"].append(prompt)
        out["completion_ids"].append(reply)
        out["label"].append(bool(record["kto_tag"]))
        out["input_ids"].append(prompt + reply)
        out["attention_mask"].append([1] * (len(prompt) + len(reply)))
        out["labels"].append([IGNORE_INDEX] * len(prompt) + reply)
        out["_status"].append(status)
        if media is not None:
            for kind, items in media_columns_of(record).items():
                out[kind].append(items)
    return out


# ---------------------------------------------------------------- unsupervised (prediction)

def process_unsupervised(batch: dict[str, list], *, tokenizer, template, settings: ProcessSettings,
                         media: MediaEncoder | None = None) -> dict[str, list]:
    """Prompt only, ending with the generation prompt; ``labels`` are the reference reply's ids (may be empty).

    Used for prediction and the ppo/grpo prompts: the shared policy with no reply, so an over-long
    prompt keeps its end (the question and the generation prompt are what matter). With media the
    prompt holds the expanded media tokens and must keep all of them (else the row is dropped).
    """
    out: dict[str, list] = {"input_ids": [], "attention_mask": [], "labels": [], "_status": [], "_error": []}
    if media is not None:
        out.update({kind: [] for kind in KINDS})
    for record in _records(batch, media, "unsupervised"):
        messages = list(record["messages"])
        reference = ""
        if messages and messages[-1]["role"] in (ASSISTANT, FUNCTION_CALL):
            reference = messages.pop()["content"]
        full, _ = encode_record(record, tokenizer, template, media, messages, add_generation_prompt=True)
        ids, _, status = fit_prompt_and_replies(full, [], settings.cutoff_len)
        reason = ""
        if media is not None and media.count_media_tokens(ids) != media.count_media_tokens(full):
            ids, status = [], REPLY_CUT
            reason = media_cut_reason(media.count_media_tokens(full), len(full), settings.cutoff_len)
        out["input_ids"].append(ids)
        out["attention_mask"].append([1] * len(ids))
        out["labels"].append(tokenizer(reference, add_special_tokens=False)["input_ids"] if reference else [])
        out["_status"].append(status)
        out["_error"].append(_where(record, reason))
        if media is not None:
            for kind, items in media_columns_of(record).items():
                out[kind].append(items)
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


def process_batch(batch: dict[str, list], *, stage: str, tokenizer, template, settings: ProcessSettings,
                  media: MediaEncoder | None = None) -> dict[str, list]:
    """The ``datasets.map`` function: canonical records in, the stage's columns plus ``_status``/``_error`` out.

    ``media`` (the model's processor, for a vision/audio model) adds the media path columns
    (images/videos/audios) that the collator turns into the processor's tensors.
    When the template rejects an example (e.g. a chat template that refuses a role), the batch is
    redone one example at a time and the rejected ones become FAILED rows carrying the reason.
    """
    kind = stage_kind(stage)
    fn = PROCESSORS[kind]
    extra = {"media": media} if kind in MEDIA_KINDS_OF_STAGE else {}
    columns = [*COLUMNS[kind], *(KINDS if extra and media is not None else ())]
    try:
        out = fn(batch, tokenizer=tokenizer, template=template, settings=settings, **extra)
        out.setdefault("_error", [""] * len(out["_status"]))
        return out
    except TuneryError:
        pass
    merged: dict[str, list] = {key: [] for key in [*columns, "_status", "_error"]}
    for i in range(len(batch["messages"])):
        single = {key: [values[i]] for key, values in batch.items()}
        try:
            out = fn(single, tokenizer=tokenizer, template=template, settings=settings, **extra)
            out.setdefault("_error", [""] * len(out["_status"]))
        except TuneryError as exc:
            source = (single.get("_source") or [None])[0] or {}
            where = f"{source.get('file', '?')} row {source.get('row', '?')}"
            out = {key: [False if key == "label" else []] for key in columns}
            out.update({"_status": [FAILED], "_error": [f"{where}: {exc.message}"]})
        for key in merged:
            merged[key] += out[key]
    return merged

