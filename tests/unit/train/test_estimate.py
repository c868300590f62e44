"""The dry-run plan and the estimate: every stage's own columns and passes, one estimator for both
commands, devices and ZeRO/FSDP sharding."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from tests.unit.train_utils import train_config
from tunery.errors import ConfigError

FLOPS, BANDWIDTH = 1e11, 1e10  # fixed machine rates: no measuring, comparable figures

QUESTIONS = ["Name a red fruit.", "What is two plus two?", "Say hello in French.", "Pick a colour of the sky.",
             "Count to three.", "Name a large animal."]
GOOD = ["An apple.", "Four.", "Bonjour.", "Blue.", "One, two, three.", "An elephant."]
BAD = ["I will not answer that question today, sorry.", "Five, or maybe six.", "Hallo.", "Green like grass.",
       "Three, two, one.", "A mouse."]


def write_data(folder: Path) -> Path:
    """Our own tiny sets in every format the stages read: alpaca sft/prompts, ranking pairs, kto."""
    folder.mkdir(parents=True, exist_ok=True)
    sft = [{"instruction": q, "input": "", "output": a} for q, a in zip(QUESTIONS, GOOD)]
    pairs = [{"instruction": q, "chosen": a, "rejected": b} for q, a, b in zip(QUESTIONS, GOOD, BAD)]
    kto = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a if i % 2 else b}],
            "label": bool(i % 2)} for i, (q, a, b) in enumerate(zip(QUESTIONS, GOOD, BAD))]
    for name, rows in (("sft", sft), ("pairs", pairs), ("kto", kto)):
        (folder / f"{name}.json").write_text(json.dumps(rows), encoding="utf-8")
    info = {
        "sft": {"file_name": "sft.json"},
        "pairs": {"file_name": "pairs.json", "ranking": True,
                  "columns": {"prompt": "instruction", "chosen": "chosen", "rejected": "rejected"}},
        "kto": {"file_name": "kto.json", "formatting": "sharegpt",
                "columns": {"messages": "messages", "kto_tag": "label"},
                "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                         "assistant_tag": "assistant"}},
    }
    (folder / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    return folder


STAGE_DATA = {"pt": "sft", "sft": "sft", "rm": "pairs", "dpo": "pairs", "orpo": "pairs", "simpo": "pairs",
              "kto": "kto", "ppo": "sft", "grpo": "sft"}
REWARD = {"reward_model": "http://127.0.0.1:9/unused", "reward_model_type": "api"}  # parsed, never called


def stage_config(model: Path, tmp_path: Path, stage: str, **overrides):
    raw = {"stage": stage, "dataset": STAGE_DATA[stage], "dataset_dir": str(write_data(tmp_path / "data")),
           "cutoff_len": 64, "max_steps": -1, "num_train_epochs": 1.0, "per_device_train_batch_size": 2,
           "dry_run": True, "max_new_tokens": 16}
    if stage in ("ppo", "grpo"):
        raw.update(REWARD)
    raw.update(overrides)
    return train_config(model, tmp_path / "out", **raw)


def plan_of(cfg):
    from tunery.train.dry_run import build_plan

    return build_plan(cfg, flops=FLOPS, bandwidth=BANDWIDTH)


def dataset_of(cfg):
    from tunery.data import get_dataset
    from tunery.data.template import get_template
    from tunery.model.loader import load_tokenizer

    tokenizer = load_tokenizer(cfg.model)
    return get_dataset(cfg, tokenizer, get_template("auto", tokenizer, cfg.data), cfg.finetuning.stage).train_dataset


@pytest.fixture(scope="module")
def plans(tiny_chatml_model, tmp_path_factory):
    """The plan of every stage on the same six questions (the grpo one with pref_beta 0 as well)."""
    out = {}
    for stage in STAGE_DATA:
        tmp = tmp_path_factory.mktemp(stage)
        cfg = stage_config(tiny_chatml_model, tmp, stage)
        out[stage] = (cfg, plan_of(cfg))
    tmp = tmp_path_factory.mktemp("grpo0")
    cfg = stage_config(tiny_chatml_model, tmp, "grpo", pref_beta=0.0)
    out["grpo-beta0"] = (cfg, plan_of(cfg))
    return out


@pytest.mark.parametrize("stage", ["rm", "dpo", "orpo", "simpo"])
def test_pairwise_plan_counts_chosen_and_rejected(plans, stage):
    """FR2-02: both sequences are counted and their replies are the trained tokens."""
    cfg, plan = plans[stage]
    rows = list(dataset_of(cfg))
    chosen = sum(len(r["prompt_ids"]) + len(r["chosen_ids"]) for r in rows)
    rejected = sum(len(r["prompt_ids"]) + len(r["rejected_ids"]) for r in rows)
    replies = sum(len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in rows)
    assert plan.examples == 6 and replies > 0
    assert (plan.tokens, plan.trained_tokens) == (chosen + rejected, replies)
    assert plan.steps == 3  # 6 pairs, batch 2
    text = "\n".join(plan.lines())
    assert f"tokens: {chosen + rejected:,} in the training set (chosen + rejected" in text
    assert f"{replies:,} of them trained on" in text
    # the estimate is built on both sequences: one micro-batch holds 2 pairs = 4 sequences
    assert plan.estimate.tokens_per_step == pytest.approx(2 * (chosen + rejected) / 6, abs=1)


def test_reference_passes_and_heads_per_stage(plans):
    """dpo = policy (4 x P per token, LoRA) + reference forward (2 x P); orpo/simpo no reference; rm scalar head."""
    dpo, orpo, simpo, rm = (plans[s][1].estimate for s in ("dpo", "orpo", "simpo", "rm"))
    assert dpo.flops_per_step == pytest.approx(1.5 * orpo.flops_per_step)
    assert orpo.flops_per_step == pytest.approx(simpo.flops_per_step)
    assert "reference forward: chosen + rejected" in dpo.covers and not any("reference" in c for c in orpo.covers[1:])
    assert rm.logits * 100 < dpo.logits  # one score per token, no vocabulary logits (vocab ~600 here)
    assert rm.total < dpo.total  # the LM head became a 1-output score head
    assert dpo.other_models == 0  # LoRA: the reference is the base with the adapter off, no copy


def test_full_training_reference_is_a_second_copy(tiny_chatml_model, tmp_path):
    full_dpo = plan_of(stage_config(tiny_chatml_model, tmp_path / "a", "dpo", finetuning_type="full")).estimate
    full_orpo = plan_of(stage_config(tiny_chatml_model, tmp_path / "b", "orpo", finetuning_type="full")).estimate
    assert full_dpo.other_models == full_dpo.weights > 0 and full_orpo.other_models == 0
    assert full_dpo.peak_bytes - full_orpo.peak_bytes >= full_dpo.weights


def test_pt_sft_kto_count_their_rows(plans):
    for stage in ("pt", "sft", "kto"):
        cfg, plan = plans[stage]
        rows = list(dataset_of(cfg))
        assert plan.tokens == sum(len(r["input_ids"]) for r in rows) > 0
        assert plan.trained_tokens == sum(1 for r in rows for t in r["labels"] if t != -100) > 0
    sft, kto = plans["sft"][1].estimate, plans["kto"][1].estimate
    # kto: trained sequence (4 x P) + KL sequence through the policy (2 x P) + both through the reference (4 x P)
    per_token_sft = sft.flops_per_step / sft.tokens_per_step
    assert kto.flops_per_step / kto.tokens_per_step == pytest.approx(2.5 * per_token_sft, rel=0.01)  # int tokens


def test_ppo_and_grpo_count_generation(plans):
    ppo_cfg, ppo = plans["ppo"]
    rows = list(dataset_of(ppo_cfg))
    assert ppo.tokens == sum(len(r["input_ids"]) for r in rows) and ppo.trained_tokens == 0
    assert "generated during training" in "\n".join(ppo.lines())
    mean_prompt = ppo.tokens / 6
    sequence = mean_prompt + 16  # max_new_tokens
    p = ppo.estimate.total
    # per prompt: 4 ppo_epochs trained passes (4 x P) + policy/value, reference (LoRA: base) forward (2 x P each)
    assert ppo.estimate.flops_per_step == pytest.approx(2 * p * sequence * (4 * 4 + 2 + 2), rel=1e-6)
    assert any("generation" in c for c in ppo.estimate.covers)
    assert ppo.steps == 3

    _, grpo = plans["grpo"]
    _, grpo0 = plans["grpo-beta0"]
    # 6 prompts x 4 completions, 2 completions per step
    assert grpo.steps == grpo0.steps == 12
    assert grpo.estimate.flops_per_step == pytest.approx(1.5 * grpo0.estimate.flops_per_step)
    assert "4 completions per prompt" in grpo.estimate.covers[0]
    assert grpo.estimate.seconds_per_step > grpo.estimate.flops_per_step / (FLOPS * 0.35)  # + sampling time


def test_dry_run_and_estimate_print_the_same_figures(tiny_chatml_model, tmp_path, capsys, monkeypatch):
    """One estimator: the same config through ``tunery estimate`` and ``tunery train --dry_run true``."""
    from tunery.cli import estimate as estimate_cli
    from tunery.cli import train as train_cli
    from tunery.train import estimate

    estimate.machine_rates.cache_clear()
    calls = []

    def fake_rates(seconds: float = 0.3):
        calls.append(seconds)
        return FLOPS, BANDWIDTH

    monkeypatch.setattr(estimate, "machine_rates", fake_rates)
    monkeypatch.setattr("tunery.train.dry_run.machine_rates", fake_rates)
    data = write_data(tmp_path / "data")
    argv = ["--model_name_or_path", str(tiny_chatml_model), "--stage", "dpo", "--dataset", "pairs",
            "--dataset_dir", str(data), "--cutoff_len", "64", "--per_device_train_batch_size", "2",
            "--output_dir", str(tmp_path / "out"), "--finetuning_type", "lora", "--report_to", "none"]
    assert estimate_cli.main(argv) == 0
    from_estimate = capsys.readouterr().out
    assert train_cli.main([*argv, "--do_train", "true", "--dry_run", "true"]) == 0
    from_dry_run = capsys.readouterr().out
    pick = re.compile(r"^(tokens|optimizer steps|estimated peak memory|estimated time|parameters|devices).*$", re.M)
    assert pick.findall(from_estimate) and len(pick.findall(from_estimate)) == 6
    figures = [m.group(0) for m in pick.finditer(from_estimate)]
    assert figures == [m.group(0) for m in pick.finditer(from_dry_run)]
    assert len(calls) == 2


def test_machine_rates_are_measured_once_per_process(monkeypatch):
    from tunery.train import estimate

    estimate.machine_rates.cache_clear()
    first = estimate.machine_rates(0.03)
    assert estimate.machine_rates(0.03) is first and first[0] > 0 and first[1] > 0
    estimate.machine_rates.cache_clear()


# ------------------------------------------------------------------------------ devices and sharding
def test_device_count_from_the_environment():
    from tunery.train.estimate import device_count

    assert device_count({"WORLD_SIZE": "8", "NPROC_PER_NODE": "2"})[0] == 8
    assert device_count({"NPROC_PER_NODE": "4", "NNODES": "2"}) == (8, "NPROC_PER_NODE=4 x NNODES=2")
    assert device_count({"NPROC_PER_NODE": "3"})[0] == 3
    with pytest.raises(ConfigError, match="NNODES"):
        device_count({"NNODES": "two"})


def ds_config(tmp_path: Path, stage: int, **zero) -> str:
    path = tmp_path / f"ds_z{stage}.json"
    path.write_text(json.dumps({"train_micro_batch_size_per_gpu": "auto",
                                "zero_optimization": {"stage": stage, **zero}}), encoding="utf-8")
    return str(path)


def estimate_config(model: Path, tmp_path: Path, **raw):
    from tunery.config import parse_config

    base = {"model_name_or_path": str(model), "output_dir": str(tmp_path / "out"), "finetuning_type": "full",
            "cutoff_len": 64, "per_device_train_batch_size": 2, "max_steps": 10}
    base.update(raw)
    return parse_config("estimate", base)


def test_zero_stages_shard_model_states(tiny_chatml_model, tmp_path, monkeypatch):
    """ZeRO-1/2/3 divide optimizer / + gradients / + weights by the device count (Rajbhandari et al. 2020)."""
    from tunery.train.estimate import estimate_run

    monkeypatch.setenv("NPROC_PER_NODE", "4")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("NNODES", raising=False)
    plain = estimate_run(estimate_config(tiny_chatml_model, tmp_path))
    assert plain.parallel.devices == 4 and plain.parallel.zero_stage == 0
    figures = {}
    for stage in (1, 2, 3):
        cfg = estimate_config(tiny_chatml_model, tmp_path, deepspeed=ds_config(tmp_path, stage))
        figures[stage] = estimate_run(cfg)
        assert figures[stage].parallel.zero_stage == stage
    w, g, o = plain.weights, plain.gradients, plain.optimizer
    assert (figures[1].weights, figures[1].gradients, figures[1].optimizer) == (w, g, math.ceil(o / 4))
    assert (figures[2].weights, figures[2].gradients, figures[2].optimizer) == (w, math.ceil(g / 4), math.ceil(o / 4))
    assert (figures[3].weights, figures[3].gradients, figures[3].optimizer) == tuple(math.ceil(x / 4) for x in (w, g, o))
    assert plain.peak_bytes > figures[1].peak_bytes > figures[2].peak_bytes > figures[3].peak_bytes
    assert plain.activations == figures[3].activations  # activations are per device, not sharded
    assert "per device" in "\n".join(figures[3].lines()) and "ZeRO-3 (ds_z3.json)" in "\n".join(figures[3].lines())


def test_zero3_offload_moves_states_to_host(tiny_chatml_model, tmp_path, monkeypatch):
    from tunery.train.estimate import estimate_run

    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = estimate_config(tiny_chatml_model, tmp_path, deepspeed=ds_config(
        tmp_path, 3, offload_optimizer={"device": "cpu"}, offload_param={"device": "cpu"}))
    est = estimate_run(cfg)
    assert est.optimizer == 0 and est.weights == 0
    assert est.host_bytes == math.ceil(est.trainable * 8 / 2) + math.ceil(est.total * 4 / 2)
    assert "host memory for offloaded states per device" in "\n".join(est.lines())


def test_fsdp_full_shard_is_zero3(tiny_chatml_model, tmp_path, monkeypatch):
    from tunery.train.estimate import estimate_run

    monkeypatch.setenv("WORLD_SIZE", "2")
    est = estimate_run(estimate_config(tiny_chatml_model, tmp_path, fsdp="full_shard"))
    assert est.parallel.zero_stage == 3 and est.parallel.scheme == "FSDP full_shard"
    assert est.weights == math.ceil(est.total * 4 / 2)


def test_bad_deepspeed_file_is_a_config_error(tiny_chatml_model, tmp_path):
    from tunery.train.estimate import estimate_run

    with pytest.raises(ConfigError, match="not found"):
        estimate_run(estimate_config(tiny_chatml_model, tmp_path, deepspeed=str(tmp_path / "missing.json")))
    with pytest.raises(ConfigError, match="stage"):
        estimate_run(estimate_config(tiny_chatml_model, tmp_path, deepspeed=ds_config(tmp_path, 5)))


def test_steps_per_epoch_divide_by_data_parallel_size(tiny_chatml_model, tmp_path, monkeypatch):
    from tunery.train.estimate import steps_for

    args = train_config(tiny_chatml_model, tmp_path, max_steps=-1, num_train_epochs=1.0,
                        per_device_train_batch_size=4, gradient_accumulation_steps=2).training
    assert steps_for(64, args) == 8
    assert steps_for(64, args, devices=4) == 2
    assert steps_for(65, args, devices=4) == 3  # ceil(ceil(65 / 16) / 2)

    monkeypatch.setenv("WORLD_SIZE", "3")
    cfg = stage_config(tiny_chatml_model, tmp_path, "sft", per_device_train_batch_size=1)
    plan = plan_of(cfg)
    assert plan.steps == 2 and "3 devices (WORLD_SIZE=3)" in "\n".join(plan.lines())  # 6 rows / 3 devices


def test_a_ray_run_counts_its_workers_per_device(tiny_chatml_model, tmp_path, monkeypatch):
    """use_ray: Ray Train's ray_num_workers are the data-parallel devices (launcher variables do not count)."""
    from tunery.train.dry_run import build_plan
    from tunery.train.estimate import estimate_run

    monkeypatch.setenv("WORLD_SIZE", "8")  # not Ray's: ignored
    ray = {"use_ray": True, "ray_num_workers": 2, "resources_per_worker": {"CPU": 1}}
    alone = estimate_run(estimate_config(tiny_chatml_model, tmp_path, deepspeed=ds_config(tmp_path, 3)))
    est = estimate_run(estimate_config(tiny_chatml_model, tmp_path, deepspeed=ds_config(tmp_path, 3), **ray))
    assert est.parallel.devices == 2 and alone.parallel.devices == 8
    assert est.parallel.source == "Ray Train, ray_num_workers=2 with {CPU: 1} each"
    assert est.weights == math.ceil(est.total * 4 / 2) and est.weights > alone.weights  # ZeRO-3 over 2 workers
    lines = "\n".join(build_plan(estimate_config(tiny_chatml_model, tmp_path, **ray), flops=1e12,
                                 bandwidth=1e11).lines())
    assert "devices: 2 devices (Ray Train, ray_num_workers=2 with {CPU: 1} each)" in lines
    assert "estimated peak memory per device" in lines and "runs through Ray Train (use_ray)" in lines
    assert "runs through Ray Train" not in "\n".join(build_plan(estimate_config(tiny_chatml_model, tmp_path),
                                                                  flops=1e12, bandwidth=1e11).lines())
