"""The scorer reads the same next-token probabilities as a direct forward pass, picks the most probable
letter, and is unchanged by batching, padding and the shared-prefix cache."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tunery.evaluation.scorer import common_prefix_length, letter_token_ids, score_prompts


@pytest.fixture(scope="module")
def tiny(tiny_chatml_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_chatml_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_chatml_model, dtype=torch.float32).eval()
    return tokenizer, model


def prompts(tokenizer):
    shared = "The following are multiple choice questions (with answers) about tests.\n\n" * 3
    texts = [shared + f"Question {i}: {'what ' * i}is it?\nA. x\nB. y\nC. z\nD. w\nAnswer:" for i in range(1, 7)]
    return [tokenizer(t)["input_ids"] for t in texts]


def direct(model, ids, letters):
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
    return torch.softmax(logits.float(), -1)[letters]


@pytest.mark.parametrize("batch_size,groups", [(1, None), (4, None), (3, [[0, 1, 2], [3, 4, 5]])])
def test_scores_equal_a_direct_forward_pass(tiny, batch_size, groups):
    tokenizer, model = tiny
    ids = prompts(tokenizer)
    assert len({len(x) for x in ids}) == 6  # different lengths: padding is exercised
    letters = letter_token_ids(tokenizer, "Answer:", tokenizer("Answer:")["input_ids"], "ABCD", " ", add_special_tokens=False)
    scores = score_prompts(model, ids, letters, batch_size=batch_size, pad_id=tokenizer.pad_token_id, groups=groups,
                           min_prefix=8)
    for x, score in zip(ids, scores):
        expected = direct(model, x, letters)
        assert score.token_probs == pytest.approx(expected.tolist(), abs=1e-5)
        assert score.predicted == int(torch.argmax(expected))
        assert sum(score.choice_probs) == pytest.approx(1.0)
        assert score.choice_probs == pytest.approx((expected / expected.sum()).tolist(), abs=1e-5)


def test_prefix_cache_is_used_for_groups(tiny):
    tokenizer, model = tiny
    ids = prompts(tokenizer)
    assert common_prefix_length(ids) > 30
    assert common_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2  # each prompt keeps one token of its own
    calls = []
    handle = model.register_forward_pre_hook(lambda _m, _a, kw: calls.append(tuple(kw["input_ids"].shape)), with_kwargs=True)
    try:
        score_prompts(model, ids, [1, 2, 3, 4], batch_size=6, pad_id=0, groups=[list(range(6))], min_prefix=8)
    finally:
        handle.remove()
    prefix = common_prefix_length(ids)
    assert calls[0] == (1, prefix)  # the shared prefix once
    assert calls[1] == (6, max(len(x) for x in ids) - prefix)  # then only the questions


def test_prediction_is_the_most_probable_letter(tiny):
    tokenizer, model = tiny
    ids = prompts(tokenizer)[:1]
    vocab = direct(model, ids[0], list(range(len(tokenizer))))
    ranked = torch.argsort(vocab, descending=True).tolist()
    letters = [ranked[5], ranked[0], ranked[9], ranked[2]]  # the top token sits at index 1
    (score,) = score_prompts(model, ids, letters, batch_size=1, pad_id=0)
    assert score.predicted == 1
    assert score.token_probs[1] == max(score.token_probs)


def test_letter_ids_follow_the_prompt_in_context(tiny):
    tokenizer, _ = tiny
    text = "Answer:"
    ids = tokenizer(text)["input_ids"]
    spaced = letter_token_ids(tokenizer, text, ids, "ABCD", " ", add_special_tokens=False)
    bare = letter_token_ids(tokenizer, text, ids, "ABCD", "", add_special_tokens=False)
    assert len(set(spaced)) == 4 and len(set(bare)) == 4
    assert [tokenizer.decode([i]).strip() for i in spaced] == ["A", "B", "C", "D"]
    assert [tokenizer.decode([i]) for i in spaced][1:] == [" B", " C", " D"]  # " B" is one token after "Answer:"
    assert [tokenizer.decode([i]) for i in bare] == ["A", "B", "C", "D"]
