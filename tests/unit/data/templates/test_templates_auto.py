"""template: auto — the tokenizer's own Jinja template, with assistant spans found exactly."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from tunery.data.template import Encoded, Segment, get_template
from tunery.data.templates.jinja_auto import AutoTemplate
from tunery.errors import DataError, ModelError

TWO_TURNS = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "The capital of France is Paris."},
    {"role": "user", "content": "And 1 + 2?"},
    {"role": "assistant", "content": "3"},
]


@pytest.fixture(scope="module", params=["tiny_chatml_model", "tiny_llama_model"])
def tokenizer(request):
    return AutoTokenizer.from_pretrained(request.getfixturevalue(request.param))


def trained_text(tok, enc: Encoded, turn: int) -> str:
    return tok.decode([i for i, t in zip(enc.input_ids, enc.turns) if t == turn])


def test_auto_is_default_when_tokenizer_has_template(tokenizer):
    assert isinstance(get_template(None, tokenizer), AutoTemplate)
    assert isinstance(get_template("auto", tokenizer), AutoTemplate)


def test_render_equals_apply_chat_template(tokenizer):
    template = get_template("auto", tokenizer)
    for gen in (False, True):
        msgs = TWO_TURNS if not gen else TWO_TURNS[:-1]
        expected = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
        assert template.render_text(msgs, add_generation_prompt=gen) == expected


def test_trained_tokens_are_exactly_replies_plus_end_of_turn(tokenizer):
    template = get_template("auto", tokenizer)
    eot = tokenizer.eos_token
    enc = template.encode(tokenizer, TWO_TURNS)
    assert enc.num_turns == 2
    assert trained_text(tokenizer, enc, 0) == "The capital of France is Paris." + eot
    assert trained_text(tokenizer, enc, 1) == "3" + eot
    # one tokenization of the whole text: ids equal what inference tokenizes
    full = tokenizer.apply_chat_template(TWO_TURNS, tokenize=False)
    assert enc.input_ids == tokenizer(full, add_special_tokens=False)["input_ids"]
    # the trained tokens of a turn are contiguous
    idx = [i for i, t in enumerate(enc.turns) if t == 0]
    assert idx == list(range(idx[0], idx[-1] + 1))


def test_segments_mark_only_assistant_spans(tokenizer):
    segs = get_template("auto", tokenizer).render(TWO_TURNS)
    trained = [s for s in segs if s.role == "assistant"]
    assert [s.turn for s in trained] == [0, 1]
    assert all(isinstance(s, Segment) for s in segs)
    assert all(s.turn == -1 for s in segs if s.role != "assistant")
    assert "Be brief." not in "".join(s.text for s in trained)


def test_prompt_ids_end_with_generation_prompt(tokenizer):
    template = get_template("auto", tokenizer)
    ids = template.prompt_ids(tokenizer, TWO_TURNS[:2])
    expected = tokenizer.apply_chat_template(TWO_TURNS[:2], tokenize=False, add_generation_prompt=True)
    assert ids == tokenizer(expected, add_special_tokens=False)["input_ids"]
    assert template.encode(tokenizer, TWO_TURNS[:2], add_generation_prompt=True).turns == [-1] * len(ids)


def test_stop_token_ids_include_end_of_turn(tokenizer):
    stops = get_template("auto", tokenizer).stop_token_ids(tokenizer)
    assert tokenizer.eos_token_id in stops


def test_default_system_from_data_args(tiny_llama_model):
    tok = AutoTokenizer.from_pretrained(tiny_llama_model)

    class Args:
        default_system = "You are terse."
        enable_thinking = True
        tool_format = None

    text = get_template("auto", tok, Args()).render_text(TWO_TURNS[1:3])
    assert "<|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>" in text
    # an explicit system message wins
    assert "You are terse." not in get_template("auto", tok, Args()).render_text(TWO_TURNS)


def test_chatml_default_system_is_not_trained(tiny_chatml_model):
    tok = AutoTokenizer.from_pretrained(tiny_chatml_model)
    template = get_template("auto", tok)
    text = template.render_text(TWO_TURNS[1:3])
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    enc = template.encode(tok, TWO_TURNS[1:3])
    assert trained_text(tok, enc, 0) == "The capital of France is Paris.<|im_end|>"


def test_template_that_rewrites_history_falls_back_to_locating_replies(tiny_chatml_model):
    """A template that strips earlier replies (like reasoning templates do) is not prefix-stable."""
    tok = AutoTokenizer.from_pretrained(tiny_chatml_model)
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'assistant' and not loop.last %}"
        "{{ '<|im_start|>assistant\n' + m['content'] | trim + '<|im_end|>\n' }}"
        "{% else %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": " Hello there "},
            {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Goodbye"}]
    template = get_template("auto", tok)
    enc = template.encode(tok, msgs)
    assert trained_text(tok, enc, 0) == "Hello there<|im_end|>"
    assert trained_text(tok, enc, 1) == "Goodbye<|im_end|>"


def test_no_chat_template_falls_back_to_default_and_auto_errors(tiny_chatml_model):
    tok = AutoTokenizer.from_pretrained(tiny_chatml_model)
    tok.chat_template = None
    assert get_template(None, tok).name == "default"
    with pytest.raises(ModelError, match="chat template"):
        get_template("auto", tok)


def test_template_errors_become_data_errors(tiny_chatml_model):
    tok = AutoTokenizer.from_pretrained(tiny_chatml_model)
    tok.chat_template = "{{ raise_exception('Conversation roles must alternate') }}"
    with pytest.raises(DataError, match="roles must alternate"):
        get_template("auto", tok).render([{"role": "user", "content": "x"}])


@pytest.mark.slow
def test_smollm2_auto_and_builtin_agree(smollm2_path):
    """The real SmolLM2-135M-Instruct tokenizer: auto trains reply + <|im_end|>; chatml + its system prompt matches."""
    from tunery.data.template import check_template

    tok = AutoTokenizer.from_pretrained(smollm2_path)
    auto = get_template(None, tok)
    assert isinstance(auto, AutoTemplate)
    enc = auto.encode(tok, TWO_TURNS[1:])
    assert trained_text(tok, enc, 0) == "The capital of France is Paris.<|im_end|>"
    assert trained_text(tok, enc, 1) == "3<|im_end|>"
    assert tok.convert_tokens_to_ids("<|im_end|>") in auto.stop_token_ids(tok)

    class Args:
        default_system = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
        enable_thinking = True
        tool_format = None

    chatml = get_template("chatml", tok, Args())
    assert check_template(chatml, tok) is None
    assert chatml.encode(tok, TWO_TURNS[1:]).input_ids == enc.input_ids
    assert chatml.encode(tok, TWO_TURNS[1:]).turns == enc.turns
    assert check_template(get_template("chatml", tok), tok) is not None  # without its default system


def test_reply_quoting_an_end_of_turn_string_is_not_cut(tiny_llama_model):
    import pickle

    tok = AutoTokenizer.from_pretrained(tiny_llama_model)
    template = pickle.loads(pickle.dumps(get_template("auto", tok)))  # datasets.map(num_proc) pickles it
    msgs = [{"role": "user", "content": "Show an end token"}, {"role": "assistant", "content": "Like <|eot_id|> this"}]
    assert [s.text for s in template.render(msgs) if s.role == "assistant"] == ["Like <|eot_id|> this<|eot_id|>"]


def test_resolving_to_the_tokenizers_own_template_is_said_once(tokenizer):
    import logging

    from tunery.data import template as template_module

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("tunery.data.template")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    template_module._SAID_AUTO.clear()
    try:
        for _ in range(3):
            get_template("auto", tokenizer)
            get_template(None, tokenizer)
        get_template("fewshot", tokenizer)  # a builtin says nothing of the kind
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    said = [r.getMessage() for r in records]
    assert said == ["template: auto: conversations are rendered by the tokenizer's own chat template",
                    "no template set: conversations are rendered by the tokenizer's own chat template"]
