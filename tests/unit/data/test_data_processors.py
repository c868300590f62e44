"""Processors: exact ids and labels per stage on a tiny ChatML tokenizer with its own template."""

from __future__ import annotations

import pytest

from tests.fixtures.tiny_models import build_tokenizer
from tunery.data.processors import (
    FAILED,
    IGNORE_INDEX,
    OK,
    REPLY_CUT,
    TRUNCATED,
    ProcessSettings,
    encode_sft,
    process_batch,
)

SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer("chatml")


@pytest.fixture(scope="module")
def template(tok):
    from tunery.data.template import get_template

    return get_template("auto", tok)


def rec(*turns, chosen=None, rejected=None, kto_tag=None, tools=None):
    roles = ["user", "assistant"]
    messages = [{"role": roles[i % 2], "content": t} for i, t in enumerate(turns)]
    return {"messages": messages, "tools": tools, "kto_tag": kto_tag, "images": None,
            "chosen": chosen and {"role": "assistant", "content": chosen},
            "rejected": rejected and {"role": "assistant", "content": rejected},
            "_source": {"file": "f", "row": 0}}


def batch(*records):
    return {k: [r[k] for r in records] for k in records[0]}


def ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def trained_text(tok, input_ids, labels):
    """Decoded trained runs, separated by ¦."""
    runs, run = [], []
    for token, label in zip(input_ids, labels):
        if label != IGNORE_INDEX:
            assert label == token
            run.append(token)
        elif run:
            runs.append(tok.decode(run)), run.clear()
    if run:
        runs.append(tok.decode(run))
    return "¦".join(runs)


MULTI = rec("Hello", "Hi there", "2+2?", "4")
MULTI_TEXT = (SYSTEM + "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n"
              "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n")


def test_sft_trains_every_assistant_turn_and_its_end_token(tok, template):
    input_ids, labels, status = encode_sft(MULTI, tok, template, ProcessSettings(cutoff_len=1024))
    assert status == OK
    assert input_ids == ids(tok, MULTI_TEXT)
    assert trained_text(tok, input_ids, labels) == "Hi there<|im_end|>¦4<|im_end|>"


def test_mask_history_trains_only_the_last_turn(tok, template):
    input_ids, labels, _ = encode_sft(MULTI, tok, template, ProcessSettings(cutoff_len=1024, mask_history=True))
    assert trained_text(tok, input_ids, labels) == "4<|im_end|>"


def test_train_on_prompt_trains_everything(tok, template):
    input_ids, labels, _ = encode_sft(MULTI, tok, template, ProcessSettings(cutoff_len=1024, train_on_prompt=True))
    assert labels == input_ids


def test_truncation_keeps_the_reply_where_it_can(tok, template):
    full, _, _ = encode_sft(MULTI, tok, template, ProcessSettings(cutoff_len=1024))
    cutoff = len(full) - 4  # the last reply loses its tail
    input_ids, labels, status = encode_sft(MULTI, tok, template, ProcessSettings(cutoff_len=cutoff))
    assert status == TRUNCATED and len(input_ids) == cutoff
    assert trained_text(tok, input_ids, labels).startswith("Hi there<|im_end|>")


def test_sft_long_prompt_short_reply_keeps_the_reply_and_the_prompts_end(tok, template):
    """FR2-04: the reply survives whole, the prompt loses its start, the row is TRUNCATED (LLaMA-Factory's policy)."""
    long = rec("filler words " * 60 + "Which day?", "Thursday.")
    full, full_labels, _ = encode_sft(long, tok, template, ProcessSettings(cutoff_len=4096))
    reply = ids(tok, "Thursday.<|im_end|>\n")
    assert full[-len(reply):] == reply
    input_ids, labels, status = encode_sft(long, tok, template, ProcessSettings(cutoff_len=40))
    assert status == TRUNCATED and len(input_ids) == len(labels) == 40
    assert input_ids == full[-40:] and labels == full_labels[-40:]  # the end: question + whole reply
    assert trained_text(tok, input_ids, labels) == "Thursday.<|im_end|>"
    assert tok.decode(input_ids).endswith("Which day?<|im_end|>\n<|im_start|>assistant\nThursday.<|im_end|>\n")


def test_sft_multi_turn_keeps_the_last_reply_and_earlier_labels_in_the_kept_end(tok, template):
    long_first = rec("Hello " * 60, "Hi", "2+2?", "4")
    full, full_labels, _ = encode_sft(long_first, tok, template, ProcessSettings(cutoff_len=4096))
    input_ids, labels, status = encode_sft(long_first, tok, template, ProcessSettings(cutoff_len=30))
    assert status == TRUNCATED and input_ids == full[-30:] and labels == full_labels[-30:]
    assert trained_text(tok, input_ids, labels) == "Hi<|im_end|>¦4<|im_end|>"


def test_sft_drops_only_when_no_reply_token_fits_and_says_why(tok, template):
    out = process_batch(batch(rec("Hello " * 60, "Hi")), stage="sft", tokenizer=tok, template=template,
                        settings=ProcessSettings(cutoff_len=1))
    assert out["_status"] == [REPLY_CUT] and out["input_ids"] == [[]]
    assert "f row 0: dropped: cutoff_len=1 leaves no room for the reply" in out["_error"][0]
    kept = process_batch(batch(rec("Hello " * 60, "Hi")), stage="sft", tokenizer=tok, template=template,
                         settings=ProcessSettings(cutoff_len=2))
    # cutoff_len=2: one prompt token and the reply's first token, which is trained
    assert kept["_status"] == [TRUNCATED] and len(kept["input_ids"][0]) == 2
    assert kept["labels"][0] == [IGNORE_INDEX, kept["input_ids"][0][1]]


def test_truncation_budget_is_the_one_policy():
    from tunery.data.processors import truncation_budget

    assert truncation_budget(10, [5], 20) == (10, 5)          # fits: nothing cut
    assert truncation_budget(200, [25], 96) == (71, 25)       # short reply kept whole, prompt cut
    assert truncation_budget(10, [500], 100) == (10, 90)      # short prompt kept, reply cut
    assert truncation_budget(300, [300], 100) == (50, 50)     # both long: reply keeps half
    assert truncation_budget(300, [], 100) == (100, 0)        # prompt only (ppo/grpo/predict)
    assert truncation_budget(300, [9, 3], 1) == (1, 0)        # no room: the caller drops the row


def test_kto_and_unsupervised_apply_the_same_policy(tok, template):
    long = rec("filler words " * 60 + "Which day?", "Thursday.", kto_tag=True)
    kto = process_batch(batch(long), stage="kto", tokenizer=tok, template=template, settings=ProcessSettings(cutoff_len=40))
    assert kto["_status"] == [TRUNCATED] and tok.decode(kto["completion_ids"][0]) == "Thursday.<|im_end|>"
    assert len(kto["input_ids"][0]) == 40 and kto["input_ids"][0] == kto["prompt_ids"][0] + kto["completion_ids"][0]
    assert tok.decode(kto["prompt_ids"][0]).endswith("Which day?<|im_end|>\n<|im_start|>assistant\n")
    for stage in ("ppo", "grpo", "predict"):
        out = process_batch(batch(long), stage=stage, tokenizer=tok, template=template,
                            settings=ProcessSettings(cutoff_len=40))
        full = template.prompt_ids(tok, long["messages"][:1])
        assert out["_status"] == [TRUNCATED] and out["input_ids"][0] == full[-40:], stage


def test_rm_and_dpo_keep_short_replies_whole(tok, template):
    r = rec("filler words " * 60 + "Which day?", chosen="Thursday.", rejected="Monday.")
    for stage in ("rm", "dpo", "orpo", "simpo"):
        out = process_batch(batch(r), stage=stage, tokenizer=tok, template=template,
                            settings=ProcessSettings(cutoff_len=40))
        assert out["_status"] == [TRUNCATED], stage
        assert tok.decode(out["chosen_ids"][0]) == "Thursday.<|im_end|>"
        assert tok.decode(out["rejected_ids"][0]) == "Monday.<|im_end|>"
        assert len(out["prompt_ids"][0]) + max(len(out["chosen_ids"][0]), len(out["rejected_ids"][0])) == 40
        assert tok.decode(out["prompt_ids"][0]).endswith("Which day?<|im_end|>\n<|im_start|>assistant\n")


def test_images_are_reported_not_dropped(tok, template):
    r = rec("Describe <image>", "A cat.")
    r["images"] = ["cat.png"]
    out = process_batch(batch(r), stage="sft", tokenizer=tok, template=template, settings=ProcessSettings(cutoff_len=64))
    assert out["_status"] == [FAILED] and "images would be silently left out" in out["_error"][0]


def test_pt_documents_end_with_eos_and_are_cut(tok, template):
    docs = batch(rec("The quick brown fox"), rec("Hello, how are you today?"))
    unpacked = process_batch(docs, stage="pt", tokenizer=tok, template=template, settings=ProcessSettings(cutoff_len=4))
    stream = ids(tok, "The quick brown fox") + [tok.eos_token_id] + ids(tok, "Hello, how are you today?") + [tok.eos_token_id]
    assert [t for row in unpacked["input_ids"] for t in row] == stream
    assert all(len(row) <= 4 for row in unpacked["input_ids"]) and unpacked["labels"] == unpacked["input_ids"]
    packed = process_batch(docs, stage="pt", tokenizer=tok, template=template,
                           settings=ProcessSettings(cutoff_len=4, packing=True))
    first_doc = ids(tok, "The quick brown fox") + [tok.eos_token_id]
    assert packed["input_ids"][0] == first_doc[:4]  # pieces never span two documents


def test_pairwise_shares_the_prompt(tok, template):
    r = rec("Hello", chosen="Hi there", rejected="Go away")
    out = process_batch(batch(r), stage="dpo", tokenizer=tok, template=template, settings=ProcessSettings(cutoff_len=512))
    prompt = SYSTEM + "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
    assert out["prompt_ids"][0] == ids(tok, prompt)
    assert tok.decode(out["chosen_ids"][0]) == "Hi there<|im_end|>"
    assert tok.decode(out["rejected_ids"][0]) == "Go away<|im_end|>"
    assert out["chosen_input_ids"][0] == out["prompt_ids"][0] + out["chosen_ids"][0]
    assert out["chosen_labels"][0] == [IGNORE_INDEX] * len(out["prompt_ids"][0]) + out["chosen_ids"][0]
    assert out["rejected_attention_mask"][0] == [1] * len(out["rejected_input_ids"][0])


def test_pairwise_truncation_keeps_half_for_replies(tok, template):
    r = rec("Hello " * 40, chosen="Hi there " * 20, rejected="Go")
    out = process_batch(batch(r), stage="orpo", tokenizer=tok, template=template, settings=ProcessSettings(cutoff_len=40))
    assert out["_status"] == [TRUNCATED]
    assert len(out["chosen_input_ids"][0]) <= 40 and len(out["chosen_ids"][0]) == 20
    assert out["rejected_ids"][0] == ids(tok, "Go<|im_end|>")


def test_kto_columns(tok, template):
    r = rec("Hello", "Hi there", kto_tag=False)
    out = process_batch(batch(r), stage="kto", tokenizer=tok, template=template, settings=ProcessSettings(cutoff_len=512))
    assert out["label"] == [False]
    assert tok.decode(out["completion_ids"][0]) == "Hi there<|im_end|>"
    assert out["input_ids"][0] == out["prompt_ids"][0] + out["completion_ids"][0]
    assert trained_text(tok, out["input_ids"][0], out["labels"][0]) == "Hi there<|im_end|>"


def test_unsupervised_is_prompt_with_generation_prompt(tok, template):
    out = process_batch(batch(rec("Hello", "Hi there")), stage="unsupervised", tokenizer=tok, template=template,
                        settings=ProcessSettings(cutoff_len=512))
    assert out["input_ids"][0] == ids(tok, SYSTEM + "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n")
    assert out["labels"][0] == ids(tok, "Hi there")
    cut = process_batch(batch(rec("Hello", "Hi there")), stage="unsupervised", tokenizer=tok, template=template,
                        settings=ProcessSettings(cutoff_len=5))
    assert cut["_status"] == [TRUNCATED] and cut["input_ids"][0] == out["input_ids"][0][-5:]


def test_tool_conversation_trains_calls_and_replies_not_tool_output(tok):
    from tunery.data.template import get_template

    r = {"messages": [{"role": "user", "content": "weather?"},
                      {"role": "function_call", "content": '{"name": "w", "arguments": {}}'},
                      {"role": "tool", "content": "sunny"},
                      {"role": "assistant", "content": "It is sunny"}],
         "tools": '[{"name": "w", "parameters": {}}]', "kto_tag": None, "images": None, "chosen": None,
         "rejected": None, "_source": {}}
    input_ids, labels, _ = encode_sft(r, tok, get_template("chatml", tok), ProcessSettings(cutoff_len=1024))
    assert trained_text(tok, input_ids, labels).split("¦") == [
        '<tool_call>\n{"name": "w", "arguments": {}}\n</tool_call><|im_end|>', "It is sunny<|im_end|>"]


class PickyTemplate:
    """Wraps a real template but rejects any conversation mentioning 'forbidden', like a strict chat template."""

    def __init__(self, inner):
        self.inner = inner

    def encode(self, tokenizer, messages, tools=None, add_generation_prompt=False):
        from tunery.errors import DataError

        if any("forbidden" in m["content"] for m in messages):
            raise DataError("the tokenizer's chat template rejected this conversation", field="messages")
        return self.inner.encode(tokenizer, messages, tools, add_generation_prompt)


def test_template_rejection_becomes_a_failed_row_with_its_source(tok, template):
    from tunery.data.processors import FAILED

    bad = rec("forbidden", "x")
    bad["_source"] = {"file": "data.json", "row": 7}
    out = process_batch(batch(rec("Hello", "Hi"), bad), stage="sft", tokenizer=tok, template=PickyTemplate(template),
                        settings=ProcessSettings(cutoff_len=512))
    assert out["_status"] == [OK, FAILED] and out["input_ids"][1] == []
    assert out["_error"] == ["", "data.json row 7: the tokenizer's chat template rejected this conversation (field 'messages')"]
    assert len(out["input_ids"][0]) > 0
