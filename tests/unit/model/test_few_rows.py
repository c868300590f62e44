"""FewRowLinear: the weight-first product for a few CPU rows, nn.Linear's own path otherwise."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import AutoModelForCausalLM

from tunery.config import parse_config
from tunery.errors import ConfigError
from tunery.inference import load_engine
from tunery.model.few_rows import MAX_ROWS, FewRowLinear, use_few_row_linear


class _FirstOperands(TorchDispatchMode):
    """Records the first operand's shape, flattened to 2-D, of every matrix product (linear, mm, addmm)."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        first = {torch.ops.aten.mm.default: 0, torch.ops.aten.addmm.default: 1, torch.ops.aten.linear.default: 0}
        if func in first:
            operand = args[first[func]]
            self.shapes.append((operand.numel() // operand.shape[-1], operand.shape[-1]))
        return func(*args, **(kwargs or {}))


def _layer(bias: bool, dtype=torch.float32) -> tuple[nn.Linear, FewRowLinear]:
    torch.manual_seed(0)
    plain = nn.Linear(24, 40, bias=bias).to(dtype)
    return plain, FewRowLinear.sharing(plain)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("rows", [1, 3, MAX_ROWS, MAX_ROWS + 4])
def test_output_equals_nn_linear_and_the_weight_goes_first_for_few_rows(rows, bias):
    plain, few = _layer(bias)
    x = torch.randn(rows, 1, 24)  # (batch, one decoding position, in_features)
    with torch.inference_mode():
        want = plain(x)
        with _FirstOperands() as seen:
            got = few(x)
    assert got.shape == (rows, 1, 40)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert got.is_contiguous()
    first = (40, 24) if rows <= MAX_ROWS else (rows, 24)  # the weight, or the rows as nn.Linear does
    assert seen.shapes == [first]


def test_with_gradients_or_another_dtype_it_is_nn_linear():
    plain, few = _layer(bias=True)
    x = torch.randn(2, 24, requires_grad=True)
    with _FirstOperands() as seen:
        out = few(x)
    assert seen.shapes == [(2, 24)]
    out.sum().backward()  # training keeps nn.Linear's autograd path
    assert few.weight.grad is not None and few.weight.grad.shape == (40, 24)

    plain16, few16 = _layer(bias=True, dtype=torch.bfloat16)
    x16 = x.detach().bfloat16()
    with torch.inference_mode():
        want = plain16(x16)
        with _FirstOperands() as seen:
            got = few16(x16)
    torch.testing.assert_close(got, want)
    assert seen.shapes == [(2, 24)]


def test_use_few_row_linear_shares_parameters_and_keeps_greedy_tokens(tiny_chatml_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_chatml_model, dtype=torch.float32).eval()
    model.lm_head.weight = model.model.embed_tokens.weight  # tied, as SmolLM2's
    prompts = torch.tensor([[0, 0, 5, 9, 11], [3, 4, 5, 6, 7], [0, 8, 2, 2, 2]])
    mask = (torch.arange(5) >= torch.tensor([[2], [0], [1]])).long()
    with torch.inference_mode():
        want = model.generate(prompts, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0)
    state = {key: value.data_ptr() for key, value in model.state_dict().items()}
    linears = sum(type(m) is nn.Linear for m in model.modules())

    class Quantized(nn.Linear):  # stands for a subclass with its own forward (bitsandbytes, PEFT)
        pass

    model.model.layers[0].mlp.down_proj.__class__ = Quantized
    model.model.layers[1].mlp.up_proj._hf_hook = object()  # accelerate's offload hook: left alone
    assert use_few_row_linear(model) == linears - 2
    assert type(model.model.layers[1].mlp.up_proj) is nn.Linear
    assert type(model.model.layers[0].mlp.down_proj) is Quantized
    assert type(model.model.layers[0].self_attn.q_proj) is FewRowLinear
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert {key: value.data_ptr() for key, value in model.state_dict().items()} == state
    with torch.inference_mode():
        got = model.generate(prompts, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert got.tolist() == want.tolist()
    assert use_few_row_linear(model) == 0  # already replaced: nothing left to do


def test_the_engine_uses_it_on_the_cpu_unless_turned_off(tiny_chatml_model, monkeypatch):
    raw = {"model_name_or_path": str(tiny_chatml_model), "do_sample": False}
    engine = load_engine(parse_config("chat", raw))
    assert type(engine.model.model.layers[0].self_attn.q_proj) is FewRowLinear
    monkeypatch.setenv("TUNERY_FEW_ROW_LINEAR", "off")
    engine = load_engine(parse_config("chat", raw))
    assert type(engine.model.model.layers[0].self_attn.q_proj) is nn.Linear
    monkeypatch.setenv("TUNERY_FEW_ROW_LINEAR", "sometimes")
    with pytest.raises(ConfigError, match="TUNERY_FEW_ROW_LINEAR must be 1 or 0, got 'sometimes'"):
        load_engine(parse_config("chat", raw))
