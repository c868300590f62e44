"""shift_attn: LongLoRA's shift short attention through transformers' attention registry (no patch)."""

from __future__ import annotations

import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from tests.unit.train_utils import train_config
from tunery.model.attention import SHIFT_ATTENTION, shift_short_attention


def _module(training: bool) -> torch.nn.Module:
    module = torch.nn.Module()
    module.is_causal = True
    module.num_key_value_groups = 2
    module.train(training)
    return module


def _qkv(batch=2, heads=4, length=16, dim=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, length, dim, generator=gen)
    k = torch.randn(batch, heads // 2, length, dim, generator=gen)
    v = torch.randn(batch, heads // 2, length, dim, generator=gen)
    return q, k, v


def _causal_groups(q, k, v, group):
    """Reference: plain causal attention inside each consecutive group of ``group`` positions. [b, T, h, d]"""
    k, v = k.repeat_interleave(q.shape[1] // k.shape[1], 1), v.repeat_interleave(q.shape[1] // v.shape[1], 1)
    parts = [torch.nn.functional.scaled_dot_product_attention(q[:, :, s:s + group], k[:, :, s:s + group],
                                                              v[:, :, s:s + group], is_causal=True)
             for s in range(0, q.shape[2], group)]
    return torch.cat(parts, dim=2).transpose(1, 2)


def test_eval_mode_is_plain_sdpa():
    q, k, v = _qkv()
    out, _ = shift_short_attention(_module(False), q, k, v, None)
    plain, _ = sdpa_attention_forward(_module(False), q, k, v, None, is_causal=True)
    assert torch.equal(out, plain)


def test_training_attends_inside_quarter_groups_with_half_the_heads_shifted():
    q, k, v = _qkv(length=16)
    group, shift = 4, 2
    out, _ = shift_short_attention(_module(True), q, k, v, None)
    plain, _ = sdpa_attention_forward(_module(False), q, k, v, None, is_causal=True)
    assert out.shape == plain.shape == (2, 16, 4, 8)
    # first half of the heads: causal attention inside each group of 4, nothing across groups
    torch.testing.assert_close(out[:, :, :2], _causal_groups(q, k, v, group)[:, :, :2])
    # the first group sees only itself under causal attention anyway: equal to plain there, different after
    torch.testing.assert_close(out[:, :group, :2], plain[:, :group, :2])
    assert (out[:, group:, :2] - plain[:, group:, :2]).abs().max() > 1e-2
    # second half: groups shifted by half a group (positions 2..5, 6..9, ...), the same causal rule inside
    rolled = _causal_groups(*(t.roll(-shift, dims=2) for t in (q, k, v)), group).roll(shift, dims=1)
    inner = slice(shift, 16 - shift)  # positions outside the wrapped group
    torch.testing.assert_close(out[:, inner, 2:], rolled[:, inner, 2:])
    # ... so at the first group's last position the shifted heads see positions 2..3 only, unlike plain
    assert (out[:, group - 1, 2:] - plain[:, group - 1, 2:]).abs().max() > 1e-2


def test_wrapped_group_never_looks_ahead_and_odd_lengths_work():
    q, k, v = _qkv(length=13)
    out, _ = shift_short_attention(_module(True), q, k, v, None)
    assert out.shape == (2, 13, 4, 8) and torch.isfinite(out).all()
    # position 0 of a shifted head shares the wrapped group with the last positions but may only see itself
    v_full = v.repeat_interleave(2, 1)
    torch.testing.assert_close(out[:, 0, 2:], v_full[:, 2:, 0])
    # changing a later token never changes an earlier output (causal everywhere)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, -1] += 5
    v2[:, :, -1] += 5
    out2, _ = shift_short_attention(_module(True), q, k2, v2, None)
    torch.testing.assert_close(out2[:, :-1], out[:, :-1])


def test_padding_mask_is_kept_and_all_padded_groups_give_no_nan():
    q, k, v = _qkv(length=16)
    keep = torch.ones(2, 16, dtype=torch.bool)
    keep[1, 6:] = False  # row 1 is padded after 6 tokens: whole groups are padding
    causal = torch.ones(16, 16, dtype=torch.bool).tril()
    mask = (causal[None] & keep[:, None, :])[:, None]
    out, _ = shift_short_attention(_module(True), q, k, v, mask)
    assert torch.isfinite(out).all()
    full, _ = shift_short_attention(_module(True), q, k, v, None)
    torch.testing.assert_close(out[0], full[0])  # the unpadded row is unchanged by the mask
    # padded keys never contribute: changing them leaves the real positions of row 1 unchanged
    k2, v2 = k.clone(), v.clone()
    k2[1, :, 6:] += 3
    v2[1, :, 6:] += 3
    out2, _ = shift_short_attention(_module(True), q, k2, v2, mask)
    torch.testing.assert_close(out2[1, :6], out[1, :6])


def test_shift_attn_setting_switches_the_model_for_training_only(tiny_chatml_model, tmp_path):
    from tunery.model.loader import load_model, load_tokenizer

    cfg = train_config(tiny_chatml_model, tmp_path / "out", shift_attn=True, finetuning_type="full",
                       disable_gradient_checkpointing=True)
    tokenizer = load_tokenizer(cfg.model)
    model = load_model(tokenizer, cfg.model, cfg.finetuning, is_trainable=True, training_args=cfg.training)
    assert model.config._attn_implementation == SHIFT_ATTENTION
    ids = torch.randint(0, 500, (2, 24), generator=torch.Generator().manual_seed(1))
    model.train()
    trained = model(input_ids=ids).logits
    model.eval()
    with torch.no_grad():
        evaluated = model(input_ids=ids).logits
    plain_cfg = train_config(tiny_chatml_model, tmp_path / "out2", finetuning_type="full")
    plain = load_model(tokenizer, plain_cfg.model, plain_cfg.finetuning)  # inference: no shift
    assert plain.config._attn_implementation != SHIFT_ATTENTION
    with torch.no_grad():
        reference = plain(input_ids=ids).logits
    torch.testing.assert_close(evaluated, reference)
    assert (trained.detach() - reference).abs().max() > 1e-3
    trained[:, -1].sum().backward()
    assert model.model.layers[0].self_attn.q_proj.weight.grad is not None


def test_training_with_shift_attn_runs_and_loss_falls(tiny_chatml_model, tmp_path):
    from tests.unit.train_utils import logged_losses, run_tiny_training

    cfg = train_config(tiny_chatml_model, tmp_path / "out", shift_attn=True, lora_alpha=32)
    outcome, trainer = run_tiny_training(cfg)
    assert outcome.stopped_by is None
    assert trainer.model.config._attn_implementation == SHIFT_ATTENTION  # the fast path did not replace it
    losses = logged_losses(tmp_path / "out")
    assert (losses[7] + losses[8]) / 2 < (losses[1] + losses[2]) / 2 - 0.05, losses


def test_fast_path_keeps_shift_attention_and_padded_batches(tiny_chatml_model, tmp_path):
    from transformers import Trainer

    from tunery.model.attention import PACKED_ATTENTION
    from tunery.model.loader import load_model, load_tokenizer
    from tunery.train.fast_path import fast_trainer_parts

    for shift, expected_impl, expected_padding_free in ((True, SHIFT_ATTENTION, False), (False, PACKED_ATTENTION, True)):
        cfg = train_config(tiny_chatml_model, tmp_path / "out", shift_attn=shift)
        model = load_model(load_tokenizer(cfg.model), cfg.model, cfg.finetuning, is_trainable=True,
                           training_args=cfg.training)
        trainer_cls, padding_free = fast_trainer_parts(cfg, model, Trainer)
        assert trainer_cls is not Trainer  # the chunked loss either way
        assert padding_free is expected_padding_free
        assert model.config._attn_implementation == expected_impl
