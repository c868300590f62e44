"""Muon and BAdam (the optimizer is the one asked for and steps the right parameters), and the EAFT/ASFT
losses (pinned against a hand computation, and wired into the sft trainer)."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import TrainerCallback

from tests.unit.train_utils import logged_losses, run_tiny_training, tokenized_dataset, train_config
from tunery.data import IGNORE_INDEX
from tunery.train.losses import asft_loss, eaft_loss
from tunery.train.optimizers import MuonWithAdamW, muon_split

# -------------------------------------------------------------------------------------------- Muon


class _InnerLearningRates(TrainerCallback):
    """Records (Muon lr, AdamW lr) after each optimizer step."""

    def __init__(self):
        self.seen: list[tuple[float, float]] = []

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        inner = getattr(optimizer, "optimizer", optimizer)
        self.seen.append((inner.muon.param_groups[0]["lr"], inner.adamw.param_groups[0]["lr"]))


def test_muon_steps_hidden_matrices_and_adamw_the_rest(tiny_chatml_model, tmp_path):
    cfg = train_config(tiny_chatml_model, tmp_path / "out", finetuning_type="full", use_muon=True,
                       learning_rate=3e-3, max_steps=6, weight_decay=0.01)
    lrs = _InnerLearningRates()
    _, trainer = run_tiny_training(cfg, callbacks=[lrs])
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    assert type(optimizer) is MuonWithAdamW
    assert type(optimizer.muon) is torch.optim.Muon and type(optimizer.adamw) is torch.optim.AdamW
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    muon = {names[id(p)] for g in optimizer.muon.param_groups for p in g["params"]}
    adamw = {names[id(p)] for g in optimizer.adamw.param_groups for p in g["params"]}
    short = {n.rsplit(".", 2)[-2] for n in muon}
    assert short == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"} <= adamw
    assert all(trainer.model.get_parameter(n).ndim == 1 for n in adamw - {"model.embed_tokens.weight",
                                                                          "lm_head.weight"})
    assert muon | adamw == {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert not muon & adamw
    # each optimizer kept its own kind of state: Muon a momentum buffer, AdamW two moments
    assert all("momentum_buffer" in optimizer.muon.state[p] for g in optimizer.muon.param_groups for p in g["params"])
    assert all("exp_avg_sq" in optimizer.adamw.state[p] for g in optimizer.adamw.param_groups for p in g["params"])
    # Muon's update is scaled as LLaMA-Factory's copy scales it; the scheduler moved both optimizers' lr
    assert optimizer.muon.param_groups[0]["adjust_lr_fn"] == "match_rms_adamw"
    assert all(muon_lr == adamw_lr for muon_lr, adamw_lr in lrs.seen) and len(lrs.seen) == 6
    assert lrs.seen[-1][0] < lrs.seen[0][0] <= 3e-3  # the linear schedule decayed both
    losses = logged_losses(tmp_path / "out")
    assert losses[max(losses)] < losses[1] - 0.1 and all(math.isfinite(v) for v in losses.values())


def test_muon_with_adamw_state_round_trips_and_lr_reaches_both():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2))
    muon_params, adamw_params = muon_split(model)
    assert [p.shape for p in muon_params] == [torch.Size([6, 4]), torch.Size([2, 6])]
    assert [p.shape for p in adamw_params] == [torch.Size([6]), torch.Size([2])]  # the biases

    def build():
        m, a = muon_split(model)
        return MuonWithAdamW(torch.optim.Muon(m, lr=0.1), torch.optim.AdamW(a, lr=0.1))

    optimizer = build()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5)
    model(torch.randn(3, 4)).sum().backward()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer.step()
    scheduler.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters()))  # every tensor moved
    assert optimizer.muon.param_groups[0]["lr"] == optimizer.adamw.param_groups[0]["lr"] == pytest.approx(0.05)
    optimizer.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    again = build()
    again.load_state_dict(optimizer.state_dict())
    assert torch.equal(again.muon.state_dict()["state"][0]["momentum_buffer"],
                       optimizer.muon.state_dict()["state"][0]["momentum_buffer"])
    assert again.adamw.state_dict()["state"][1]["step"] == 1


# ------------------------------------------------------------------------------------------- BAdam


class _ActiveLayers(TrainerCallback):
    """Records, at each step's start, which decoder layers have trainable weights."""

    def __init__(self):
        self.active: list[set[int]] = []

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        layers = set()
        for name, param in model.named_parameters():
            if param.requires_grad:
                assert ".layers." in name, name  # embeddings, final norm and head stay frozen
                layers.add(int(name.split(".layers.")[1].split(".")[0]))
        self.active.append(layers)


def test_badam_layer_mode_trains_one_block_and_switches_every_interval(tiny_chatml_model, tmp_path):
    badam = pytest.importorskip("badam")
    watcher = _ActiveLayers()
    cfg = train_config(tiny_chatml_model, tmp_path / "out", finetuning_type="full", use_badam=True,
                       badam_switch_interval=2, badam_switch_mode="ascending", learning_rate=3e-3, max_steps=6)
    _, trainer = run_tiny_training(cfg, callbacks=[watcher])
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    assert type(optimizer) is badam.BlockOptimizer
    # badam switches when (steps taken + 1) is a multiple of the interval, so the first block gets
    # one step and each later block two (LLaMA-Factory runs the same package the same way)
    assert watcher.active == [{0}, {1}, {1}, {0}, {0}, {1}]
    losses = logged_losses(tmp_path / "out")
    assert all(math.isfinite(v) for v in losses.values()) and losses[max(losses)] < losses[1]


def test_badam_only_changes_the_active_block(tiny_chatml_model, tmp_path):
    pytest.importorskip("badam")
    from tunery.model.loader import load_model, load_tokenizer

    cfg = train_config(tiny_chatml_model, tmp_path / "out", finetuning_type="full", use_badam=True,
                       badam_start_block=1, badam_switch_interval=-1, badam_switch_mode="ascending",
                       learning_rate=3e-3, max_steps=3)
    start = load_model(load_tokenizer(cfg.model), cfg.model, cfg.finetuning, is_trainable=False)
    start_weights = {n: p.detach().clone() for n, p in start.named_parameters()}
    _, trainer = run_tiny_training(cfg)
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(p.detach(), start_weights[n])}
    assert changed and all(".layers.1." in n for n in changed)  # start block 1, never switched
    assert any("q_proj" in n for n in changed)


def test_badam_ratio_mode_updates_a_share_of_each_weight(tiny_chatml_model, tmp_path):
    badam = pytest.importorskip("badam")
    from tunery.model.loader import load_model, load_tokenizer

    cfg = train_config(tiny_chatml_model, tmp_path / "out", finetuning_type="full", use_badam=True,
                       badam_mode="ratio", badam_update_ratio=0.25, learning_rate=3e-3, max_steps=1,
                       max_grad_norm=1.0)
    start = load_model(load_tokenizer(cfg.model), cfg.model, cfg.finetuning, is_trainable=False)
    start_weights = {n: p.detach().clone() for n, p in start.named_parameters()}
    _, trainer = run_tiny_training(cfg)
    assert type(getattr(trainer.optimizer, "optimizer", trainer.optimizer)) is badam.BlockOptimizerRatio
    weight = dict(trainer.model.named_parameters())["model.layers.0.mlp.up_proj.weight"]
    moved = (weight.detach() != start_weights["model.layers.0.mlp.up_proj.weight"]).float().mean().item()
    assert 0.0 < moved <= 0.3  # about a quarter of the entries, not all of them
    assert torch.equal(dict(trainer.model.named_parameters())["lm_head.weight"].detach(),
                       start_weights["lm_head.weight"])


# ---------------------------------------------------------------------------------------- EAFT/ASFT

LOGITS = torch.tensor([[[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 0.3, 0.4], [3.0, -2.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]]])
LABELS = torch.tensor([[IGNORE_INDEX, 1, 3, 0]])  # predicted from positions 0, 1, 2: tokens 1, 3, 0


def _softmax(row):
    exps = [math.exp(v) for v in row]
    return [e / sum(exps) for e in exps]


def test_eaft_loss_matches_a_hand_computation():
    rows, targets = LOGITS[0, :3].tolist(), [1, 3, 0]
    for alpha in (1.0, 0.5):
        total = 0.0
        for row, target in zip(rows, targets):
            p = _softmax(row)  # 4 logits < 20: the top-20 entropy is the full entropy
            entropy = -sum(q * math.log(q) for q in p)
            total += (entropy / 3.0) ** alpha * -math.log(p[target])
        got = eaft_loss({"logits": LOGITS}, LABELS, alpha=alpha)
        assert got.item() == pytest.approx(total / 3, rel=1e-5)
        assert eaft_loss({"logits": LOGITS}, LABELS, num_items_in_batch=6, alpha=alpha).item() == \
            pytest.approx(total / 6, rel=1e-5)
    plain = torch.nn.functional.cross_entropy(LOGITS[0, :3], torch.tensor(targets))
    assert eaft_loss({"logits": LOGITS}, LABELS, alpha=0.0).item() == pytest.approx(plain.item(), rel=1e-5)
    # the weight is detached: the gradient is weight * d(nll)
    logits = LOGITS.clone().requires_grad_(True)
    eaft_loss({"logits": logits}, LABELS, alpha=0.0).backward()
    expected = LOGITS.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(expected[0, :3], torch.tensor(targets)).backward()
    torch.testing.assert_close(logits.grad, expected.grad)


def test_eaft_loss_uses_only_the_top_20_logits():
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 50)
    labels = torch.tensor([[IGNORE_INDEX, 4, 7]])
    rows = logits[0, :2]
    top = torch.topk(rows, 20, dim=-1).values
    p = torch.softmax(top, dim=-1)
    weight = -(p * p.log()).sum(-1) / 3.0
    nll = torch.nn.functional.cross_entropy(rows, torch.tensor([4, 7]), reduction="none")
    assert eaft_loss({"logits": logits}, labels).item() == pytest.approx((weight * nll).mean().item(), rel=1e-5)


def test_asft_loss_matches_a_hand_computation():
    ref = torch.tensor([[[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 2.0], [0.5, 0.5, 0.5, 0.5], [9.0, 9.0, 9.0, 9.0]]])
    rows, ref_rows, targets = LOGITS[0, :3].tolist(), ref[0, :3].tolist(), [1, 3, 0]
    dft = kl = 0.0
    for row, ref_row, target in zip(rows, ref_rows, targets):
        p, q = _softmax(row), _softmax(ref_row)
        dft += p[target] * -math.log(p[target])
        kl += sum(qi * math.log(qi / pi) for qi, pi in zip(q, p))
    for alpha in (0.1, 2.0):
        got = asft_loss(LOGITS, ref, LABELS, alpha)
        assert got.item() == pytest.approx(dft / 3 + alpha * kl / 3, rel=1e-5)
    assert asft_loss(LOGITS, LOGITS, LABELS, 5.0).item() == pytest.approx(dft / 3, rel=1e-5)  # KL(p || p) = 0


def _sft_trainer(model_path, tmp_path, **settings):
    from tunery.data import DatasetModule
    from tunery.model.loader import load_tokenizer
    from tunery.train.sft import CausalLMStage

    cfg = train_config(model_path, tmp_path / "out", learning_rate=3e-2, **settings)
    tokenizer = load_tokenizer(cfg.model)
    data = tokenized_dataset(tokenizer, repeat=1)
    trainer = CausalLMStage("sft").create_trainer(cfg, tokenizer, None, DatasetModule(train_dataset=data))
    return trainer, dict(next(iter(trainer.get_train_dataloader())))


def _logits(model, batch):
    with torch.no_grad():
        return model(**{k: v for k, v in batch.items() if k != "labels"}).logits


def test_sft_with_eaft_loss_computes_eaft(tiny_chatml_model, tmp_path):
    trainer, batch = _sft_trainer(tiny_chatml_model, tmp_path, use_eaft_loss=True, eaft_alpha=0.5,
                                  finetuning_type="full")
    loss = trainer.compute_loss(trainer.model, dict(batch))
    logits = _logits(trainer.model, batch)
    torch.testing.assert_close(loss.detach(), eaft_loss({"logits": logits}, batch["labels"], alpha=0.5),
                               rtol=1e-4, atol=1e-6)
    plain = eaft_loss({"logits": logits}, batch["labels"], alpha=0.0)
    assert abs(loss.item() - plain.item()) > 1e-3  # the entropy weight changed it


@pytest.mark.parametrize("finetuning_type", ["lora", "full"])
def test_sft_with_asft_loss_anchors_to_the_starting_model(tiny_chatml_model, tmp_path, finetuning_type):
    trainer, batch = _sft_trainer(tiny_chatml_model, tmp_path, use_asft_loss=True, asft_alpha=0.5,
                                  finetuning_type=finetuning_type, max_steps=4)
    start = _logits(trainer.model, batch)
    loss = trainer.compute_loss(trainer.model, dict(batch))
    # at the start the model is its own reference: KL 0, the loss is the DFT term alone
    torch.testing.assert_close(loss.detach(), asft_loss(start, start, batch["labels"], 0.0), rtol=1e-4, atol=1e-6)
    trainer.model.zero_grad()
    trainer.train()
    now = _logits(trainer.model, batch)
    loss = trainer.compute_loss(trainer.model, dict(batch))
    expected = asft_loss(now, start, batch["labels"], 0.5)
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-4, atol=1e-5)
    assert loss.item() > asft_loss(now, now, batch["labels"], 0.5).item() + 1e-4  # the KL term is on
    if finetuning_type == "full":  # the reference copy stayed frozen
        assert all(not p.requires_grad for p in trainer.asft_ref_model.parameters())
