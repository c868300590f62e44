"""Turn a tiny random Llama into a deterministic bigram model that "says" a chosen token chain.

Zeroing every layer's output projections leaves the residual stream equal to the current token's
embedding, so the next token depends on the current token only. Giving each chain token a one-hot
embedding and the output head one matching row makes greedy decoding follow the chain exactly:
tests can then check where generation stops (end-of-turn tokens, stop strings) on a real model.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def script_model(model, chain: list[int]) -> None:
    """After token ``chain[i]`` the model greedily emits ``chain[i + 1]`` (tokens must be unique)."""
    assert len(set(chain)) == len(chain), "a bigram chain cannot repeat a token"
    hidden = model.config.hidden_size
    assert len(chain) <= hidden
    for layer in model.model.layers:
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()
    model.model.norm.weight.fill_(1.0)
    head = model.lm_head.weight
    head.zero_()
    emb = model.model.embed_tokens.weight
    for i, token in enumerate(chain):
        emb[token].zero_()
        emb[token, i] = 1.0
        if i + 1 < len(chain):
            head[chain[i + 1], i] = 10.0
