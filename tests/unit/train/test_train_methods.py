"""LLaMA-Factory's training methods through their libraries: each test shows the setting's effect.

disable_shuffling (data order), RoPE scaling (config + rotary frequencies), early stopping (the run
stops), compute_accuracy (eval_accuracy equals a hand count), GaLore / APOLLO (their optimizer steps).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.unit.train_utils import logged_losses, run_tiny_training, tokenized_dataset, train_config
from tunery.data import IGNORE_INDEX


def _numbered_dataset(tokenizer, n=12):
    """``n`` distinct rows ("row 0 ...", "row 1 ..."), so their order can be read back from batches."""
    from datasets import Dataset

    rows = []
    for i in range(n):
        ids = tokenizer(f"row {i}: " + "word " * (i + 2))["input_ids"]
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": ids})
    return Dataset.from_list(rows)


def _starts(batches, key_order=("prompt_ids", "input_ids")):
    out = []
    for batch in batches:
        key = next(k for k in key_order if k in batch)
        out.append([int(t) for t in batch[key][0]])
    return out


@pytest.mark.parametrize("disable", [True, False])
def test_disable_shuffling_reads_sft_data_in_order(tiny_chatml_model, tmp_path, disable):
    from transformers import DataCollatorForSeq2Seq

    from tunery.model.loader import load_model, load_tokenizer
    from tunery.train.trainer import build_trainer

    cfg = train_config(tiny_chatml_model, tmp_path / "out", per_device_train_batch_size=1,
                       disable_shuffling=disable)
    tokenizer = load_tokenizer(cfg.model)
    model = load_model(tokenizer, cfg.model, cfg.finetuning, is_trainable=True, training_args=cfg.training)
    data = _numbered_dataset(tokenizer)
    trainer = build_trainer(cfg, model, tokenizer, train_dataset=data,
                            data_collator=DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE_INDEX))
    seen = _starts(trainer.get_train_dataloader())
    in_order = seen == [list(r) for r in data["input_ids"]]
    assert in_order is disable  # shuffled: 12 rows in their own order by chance is 1 in 479 001 600


@pytest.mark.parametrize("disable", [True, False])
def test_disable_shuffling_reads_dpo_pairs_in_order(tiny_chatml_model, tmp_path, disable):
    from tests.unit.pref_data import config, pairwise_dataset
    from tunery.model.loader import load_model, load_tokenizer
    from tunery.train.dpo import preference_trainer

    cfg = config(tiny_chatml_model, tmp_path / "out", stage="dpo", per_device_train_batch_size=1,
                 disable_shuffling=disable)
    tokenizer = load_tokenizer(cfg.model)
    model = load_model(tokenizer, cfg.model, cfg.finetuning, is_trainable=True, training_args=cfg.training)
    data = pairwise_dataset(tokenizer)
    trainer = preference_trainer(cfg, model, tokenizer, data)
    seen = _starts(trainer.get_train_dataloader())
    prompts = [list(p) for p in data["prompt_ids"]]
    assert len(seen) == len(prompts)
    in_order = all(s[: len(p)] == p for s, p in zip(seen, prompts))
    assert in_order is disable


# ------------------------------------------------------------------------------------------ RoPE


def test_rope_factor_is_cutoff_over_max_positions_rounded_up():
    from tunery.model.loader import rope_scaling_factor

    assert rope_scaling_factor(512, 2048) == 4.0
    assert rope_scaling_factor(512, 1000) == 2.0
    assert rope_scaling_factor(512, 300) == 1.0  # fits: no stretch
    assert rope_scaling_factor(512, None) == 2.0  # outside training (no cutoff_len): LLaMA-Factory's 2


def _load(model_path, tmp_path, **overrides):
    from tunery.model.loader import load_model, load_tokenizer

    cfg = train_config(model_path, tmp_path / "out", **overrides)
    tokenizer = load_tokenizer(cfg.model)
    model = load_model(tokenizer, cfg.model, cfg.finetuning, is_trainable=True, training_args=cfg.training)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def test_linear_rope_scaling_stretches_positions_by_the_factor(tiny_chatml_model, tmp_path):
    plain = _load(tiny_chatml_model, tmp_path, cutoff_len=1500)
    scaled = _load(tiny_chatml_model, tmp_path, cutoff_len=1500, rope_scaling="linear")
    rope = scaled.config.rope_parameters
    assert plain.config.max_position_embeddings == 512  # the tiny model's own length
    assert rope["rope_type"] == "linear" and rope["factor"] == 3.0  # ceil(1500 / 512)
    assert rope["rope_theta"] == plain.config.rope_parameters["rope_theta"]
    assert scaled.config.max_position_embeddings == 1500
    # linear scaling divides every rotary frequency by the factor
    torch.testing.assert_close(scaled.model.rotary_emb.inv_freq, plain.model.rotary_emb.inv_freq / 3.0)


@pytest.mark.parametrize("kind", ["yarn", "llama3", "dynamic"])
def test_other_rope_kinds_carry_what_transformers_needs(tiny_chatml_model, tmp_path, kind):
    model = _load(tiny_chatml_model, tmp_path, cutoff_len=2048, rope_scaling=kind)
    rope = model.config.rope_parameters
    assert rope["rope_type"] == kind and rope["factor"] == 4.0
    if kind in ("yarn", "llama3"):
        assert rope["original_max_position_embeddings"] == 512
    if kind == "llama3":
        assert (rope["low_freq_factor"], rope["high_freq_factor"]) == (1.0, 4.0)
    model.config.validate_rope()  # transformers accepts the parameters
    ids = torch.tensor([[1, 2, 3, 4]])
    assert torch.isfinite(model(input_ids=ids).logits).all()


def test_rope_scaling_that_fits_keeps_the_length(tiny_chatml_model, tmp_path):
    model = _load(tiny_chatml_model, tmp_path, cutoff_len=256, rope_scaling="linear")
    assert model.config.rope_parameters["factor"] == 1.0 and model.config.max_position_embeddings == 512


# ------------------------------------------------------------------------------ early stopping


@pytest.mark.parametrize("patience", [1, None])
def test_early_stopping_ends_the_run_when_eval_loss_stalls(tiny_chatml_model, tmp_path, patience):
    from tunery.model.loader import load_tokenizer

    extra = {"early_stopping_steps": patience} if patience else {}
    # learning_rate 0: the eval loss never improves after the first evaluation
    cfg = train_config(tiny_chatml_model, tmp_path / "out", learning_rate=0.0, eval_strategy="steps", eval_steps=1,
                       val_size=0.1, max_steps=6, **extra)
    tokenizer = load_tokenizer(cfg.model)
    _, trainer = run_tiny_training(cfg, eval_dataset=tokenized_dataset(tokenizer, repeat=1))
    if patience:
        assert cfg.training.metric_for_best_model == "eval_loss"
        assert trainer.state.global_step <= 2  # stopped after one evaluation without improvement
    else:
        assert trainer.state.global_step == 6


# ------------------------------------------------------------------------------ compute_accuracy


def test_token_accuracy_counts_labelled_next_tokens():
    from tunery.train.metrics import token_accuracy

    labels = np.array([[IGNORE_INDEX, 5, 6, 7], [IGNORE_INDEX, IGNORE_INDEX, 8, IGNORE_INDEX]])
    # predictions[i, t] is the guess for token t + 1
    predictions = np.array([[5, 0, 7, 9], [1, 8, 3, 3]])
    assert token_accuracy(predictions, labels) == pytest.approx(3 / 4)  # 5 yes, 6 no, 7 yes, 8 yes
    assert token_accuracy(predictions, np.full_like(labels, IGNORE_INDEX)) == 0.0


def test_compute_accuracy_logs_eval_accuracy_of_the_sft_model(tiny_chatml_model, tmp_path):
    from tunery.data import DatasetModule
    from tunery.model.loader import load_tokenizer
    from tunery.train.metrics import token_accuracy
    from tunery.train.sft import CausalLMStage

    cfg = train_config(tiny_chatml_model, tmp_path / "out", compute_accuracy=True, do_train=False, do_eval=True,
                       val_size=0.1, per_device_eval_batch_size=3, finetuning_type="full")
    tokenizer = load_tokenizer(cfg.model)
    evaluation = tokenized_dataset(tokenizer, repeat=1)
    trainer = CausalLMStage("sft").create_trainer(cfg, tokenizer, None, DatasetModule(eval_dataset=evaluation))
    metrics = trainer.evaluate()
    hits = total = 0
    with torch.no_grad():
        for row in evaluation:
            ids = torch.tensor([row["input_ids"]])
            guess = trainer.model(input_ids=ids).logits.argmax(-1).numpy()
            labels = np.array([row["labels"]])
            n = int((labels[:, 1:] != IGNORE_INDEX).sum())
            hits, total = hits + token_accuracy(guess, labels) * n, total + n
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0
    assert metrics["eval_accuracy"] == pytest.approx(hits / total, abs=1e-6)


# ---------------------------------------------------------------------------------- GaLore/APOLLO


@pytest.mark.parametrize(
    ("settings", "module", "cls_name"),
    [
        ({"use_galore": True, "galore_rank": 4, "galore_update_interval": 2, "galore_scale": 1.0,
          "galore_target": "q_proj,v_proj"}, "galore_torch", "GaLoreAdamW"),
        ({"use_apollo": True, "apollo_rank": 4, "apollo_update_interval": 2, "apollo_scale": 1.0},
         "apollo_torch", "APOLLOAdamW"),
    ],
    ids=["galore", "apollo"],
)
def test_low_rank_optimizer_steps_and_loss_falls(tiny_chatml_model, tmp_path, settings, module, cls_name):
    package = pytest.importorskip(module)
    cfg = train_config(tiny_chatml_model, tmp_path / "out", finetuning_type="full", learning_rate=3e-3, **settings)
    _, trainer = run_tiny_training(cfg)
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    assert type(optimizer) is getattr(package, cls_name)
    low_rank = [g for g in optimizer.param_groups if "rank" in g]
    assert len(low_rank) == 1 and low_rank[0]["rank"] == 4 and low_rank[0]["update_proj_gap"] == 2
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    targets = {names[id(p)].split(".")[-2] for p in low_rank[0]["params"]}
    if module == "galore_torch":
        assert targets == {"q_proj", "v_proj"}
    else:  # 'all': every linear layer but the head
        assert targets == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert all("projector" in optimizer.state[p] for p in low_rank[0]["params"])  # the projection was used
    losses = logged_losses(tmp_path / "out")
    assert losses[max(losses)] < losses[1] - 0.1 and all(math.isfinite(v) for v in losses.values())


def test_low_rank_target_must_name_a_linear_module(tiny_chatml_model, tmp_path):
    from tunery.errors import ConfigError

    pytest.importorskip("galore_torch")
    cfg = train_config(tiny_chatml_model, tmp_path / "out", finetuning_type="full", use_galore=True,
                       galore_target="qkv_proj")
    with pytest.raises(ConfigError, match="galore_target: qkv_proj"):
        run_tiny_training(cfg)


# ---------------------------------------------------------------------------------------- SwanLab


def test_use_swanlab_needs_its_package(tmp_path, monkeypatch):
    from tunery.errors import DependencyError

    monkeypatch.setitem(__import__("sys").modules, "swanlab", None)  # import fails, installed or not
    with pytest.raises(DependencyError, match="swanlab") as err:
        train_config(tmp_path / "model", tmp_path / "out", use_swanlab=True)
    assert "tunery[swanlab]" in str(err.value.hint)


def test_use_swanlab_reports_to_swanlab_with_its_settings(tmp_path, monkeypatch):
    import sys
    import types

    from tunery.train.trainer import apply_run_settings

    monkeypatch.setitem(sys.modules, "swanlab", types.ModuleType("swanlab"))
    for env in ("SWANLAB_PROJECT", "SWANLAB_MODE", "SWANLAB_LOG_DIR", "SWANLAB_API_KEY"):
        monkeypatch.setenv(env, "placeholder")  # recorded, so teardown restores the original state
        monkeypatch.delenv(env)
    cfg = train_config(tmp_path / "model", tmp_path / "out", use_swanlab=True, swanlab_project="p1",
                       swanlab_mode="local", swanlab_run_name="r1", swanlab_logdir=str(tmp_path / "sw"))
    assert cfg.training.report_to == ["swanlab"]
    apply_run_settings(cfg, cfg.training)
    import os

    assert (os.environ["SWANLAB_PROJECT"], os.environ["SWANLAB_MODE"]) == ("p1", "local")
    assert os.environ["SWANLAB_LOG_DIR"] == str(tmp_path / "sw") and "SWANLAB_API_KEY" not in os.environ
    assert cfg.training.run_name == "r1"


# -------------------------------------------------------------------------------------- Adam-mini


@pytest.mark.parametrize("finetuning_type", ["full", "freeze"])
def test_adam_mini_steps_and_loss_falls(tiny_chatml_model, tmp_path, finetuning_type):
    adam_mini = pytest.importorskip("adam_mini")
    cfg = train_config(tiny_chatml_model, tmp_path / "out", finetuning_type=finetuning_type, use_adam_mini=True,
                       learning_rate=3e-3, freeze_trainable_layers=1)
    _, trainer = run_tiny_training(cfg)
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    assert type(optimizer) is adam_mini.Adam_mini
    trainable = {id(p) for p in trainer.model.parameters() if p.requires_grad}
    stepped = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert stepped == trainable and all(optimizer.state[p] for g in optimizer.param_groups for p in g["params"])
    losses = logged_losses(tmp_path / "out")
    assert losses[max(losses)] < losses[1] - 0.1


# --------------------------------------------------------------------------------------- DFT loss


def test_dft_loss_weights_each_token_by_its_detached_probability(tiny_chatml_model, tmp_path):
    from tunery.data import DatasetModule
    from tunery.model.loader import load_tokenizer
    from tunery.train.sft import CausalLMStage

    cfg = train_config(tiny_chatml_model, tmp_path / "out", use_dft_loss=True, finetuning_type="full",
                       learning_rate=3e-3)
    tokenizer = load_tokenizer(cfg.model)
    data = tokenized_dataset(tokenizer, repeat=1)
    trainer = CausalLMStage("sft").create_trainer(cfg, tokenizer, None, DatasetModule(train_dataset=data))
    batch = next(iter(trainer.get_train_dataloader()))
    model = trainer.model
    loss = trainer.compute_loss(model, dict(batch))
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    labels = torch.nn.functional.pad(batch["labels"], (0, 1), value=IGNORE_INDEX)[..., 1:]
    keep = labels != IGNORE_INDEX
    nll = torch.nn.functional.cross_entropy(logits[keep], labels[keep], reduction="none")
    expected = (nll * torch.exp(-nll)).sum() / keep.sum()
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-4, atol=1e-6)
    assert abs(float(loss.detach()) - float(nll.mean())) > 1e-3  # not the plain cross-entropy
    loss.backward()  # the weight is detached: the gradient is p * d(nll), not d(p * nll)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    model.zero_grad()
    trainer.train()
    # p * -log p is not monotone in p (it peaks at p = 1/e), so the DFT loss itself may rise while the
    # model learns; what falls is the cross-entropy of the training tokens
    with torch.no_grad():
        after = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    assert torch.nn.functional.cross_entropy(after[keep], labels[keep]) < nll.mean() - 0.5
