"""Tunery's PPO: GAE, clipped losses, adaptive KL, a learning run, outputs, and the HTTP reward scorer."""

from __future__ import annotations

import dataclasses
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import torch

from tests.unit.pref_data import config, logged, pairwise_dataset

LOW = 275


def test_gae_matches_a_hand_computation():
    from tunery.train.ppo import gae

    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 0.0]])
    values = torch.tensor([[0.5, 0.5, 0.5], [1.0, 1.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])  # second reply has 2 tokens
    advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=0.5)
    # row 0: deltas 0, 0, 0.5 -> A2 = 0.5, A1 = 0 + 0.5*0.5 = 0.25, A0 = 0 + 0.5*0.25 = 0.125
    # row 1 (value 9 masked to 0): deltas 0, 1 -> A1 = 1, A0 = 0 + 0.5*1 = 0.5
    raw = torch.tensor([[0.125, 0.25, 0.5], [0.5, 1.0, 0.0]])
    torch.testing.assert_close(returns, raw + values * mask)
    assert advantages[1, 2] == 0 and advantages[0, 2] > advantages[0, 1] > advantages[0, 0]
    assert abs(float((advantages * mask).sum())) < 1e-5  # whitened over the reply tokens


def test_clipped_losses_and_adaptive_kl():
    from tunery.train.ppo import AdaptiveKLController, PPOSettings, ppo_losses

    s = PPOSettings(cliprange=0.2, cliprange_value=0.2, vf_coef=0.5)
    old = torch.zeros(1, 2)
    new = torch.log(torch.tensor([[2.0, 0.5]]))  # ratios 2 and 0.5
    adv = torch.tensor([[1.0, -1.0]])
    mask = torch.ones(1, 2)
    loss, stats = ppo_losses(new, old, torch.zeros(1, 2), torch.zeros(1, 2), adv, torch.zeros(1, 2), mask, s)
    # positive advantage: ratio clipped at 1.2; negative: max(0.5, 0.8) = 0.8 -> mean(-1.2, 0.8) = -0.2
    assert stats["policy_loss"] == pytest.approx(-0.2) and stats["clipfrac"] == 1.0
    assert float(loss) == pytest.approx(-0.2)
    kl = AdaptiveKLController(0.2, target=6.0, horizon=100)
    kl.update(12.0, n_steps=10)  # KL twice the target: the coefficient grows (error capped at 0.2)
    assert kl.value == pytest.approx(0.2 * 1.02)
    kl.update(0.0, n_steps=10)
    assert kl.value < 0.2 * 1.02


def test_ppo_mean_reward_rises(tiny_chatml_model, tmp_path):
    from datasets import concatenate_datasets

    from tunery.model.loader import load_model, load_tokenizer
    from tunery.train.ppo import PPOSettings, ppo_trainer
    from tunery.train.pref_common import load_reference_model

    cfg = config(tiny_chatml_model, tmp_path / "out", stage="ppo", finetuning_type="full", learning_rate=3e-2,
                 max_steps=8, per_device_train_batch_size=16, max_new_tokens=1, temperature=1.0, top_p=1.0,
                 top_k=0, ppo_epochs=2)
    tokenizer = load_tokenizer(cfg.model)
    model = load_model(tokenizer, cfg.model, cfg.finetuning, is_trainable=True, training_args=cfg.training)
    ref = load_reference_model(cfg, tokenizer, model)
    data = concatenate_datasets([pairwise_dataset(tokenizer)] * 2)

    def scorer(sequences):  # learnable: the (one-token) reply should come from the lower half of the vocab
        return torch.tensor([float(seq[-1] < LOW) for seq in sequences])

    settings = dataclasses.replace(PPOSettings.from_finetuning(cfg.finetuning), init_kl_coef=0.05)
    trainer = ppo_trainer(cfg, model, tokenizer, data, scorer, ref_model=ref, settings=settings)
    trainer.train()
    rewards, kls = logged(trainer, "reward"), logged(trainer, "kl")
    assert len(rewards) == 8
    assert sum(rewards[-3:]) / 3 >= sum(rewards[:2]) / 2 + 0.25, rewards
    assert kls[-1] > 0.1  # the policy moved away from the frozen reference, and KL is measured
    assert not any(p.requires_grad for p in ref.parameters())


def test_lora_ppo_writes_sft_outputs_and_value_head(tiny_chatml_model, tmp_path):
    from tunery.model.loader import load_model, load_tokenizer
    from tunery.train.loop import fit
    from tunery.train.ppo import PLOT_KEYS, VALUE_HEAD_FILE, ppo_trainer

    out = tmp_path / "out"
    cfg = config(tiny_chatml_model, out, stage="ppo", max_steps=2, per_device_train_batch_size=4, max_new_tokens=3,
                 ppo_epochs=1, ppo_buffer_size=2, plot_loss=True)
    tokenizer = load_tokenizer(cfg.model)
    model = load_model(tokenizer, cfg.model, cfg.finetuning, is_trainable=True, training_args=cfg.training)
    lengths: list[int] = []

    def scorer(sequences):
        lengths.append(len(sequences))
        return torch.zeros(len(sequences))

    trainer = ppo_trainer(cfg, model, tokenizer, pairwise_dataset(tokenizer), scorer)  # ref: adapter off
    fit(trainer, cfg, plot_keys=PLOT_KEYS)
    assert lengths == [4, 4, 4, 4]  # 2 steps x ppo_buffer_size 2 mini-batches of 4 prompts
    log = [json.loads(x) for x in (out / "trainer_log.jsonl").read_text().splitlines()]
    assert [r["current_steps"] for r in log] == [1, 2] and all("reward" in r and "kl" in r for r in log)
    for name in ("adapter_config.json", VALUE_HEAD_FILE, "train_results.json", "training_loss.png"):
        assert (out / name).is_file(), name


def test_api_scorer_posts_texts_and_reads_scores(tiny_chatml_model):
    from tunery.errors import ModelError
    from tunery.model.loader import load_tokenizer
    from tunery.train.rewards import ApiScorer

    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            received.append(body)
            scores = [float(len(t)) for t in body["messages"]] if "bad" not in body["messages"][0] else [1.0]
            payload = json.dumps({"scores": scores}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        cfg = config(tiny_chatml_model, "/tmp/unused", stage="ppo")
        tokenizer = load_tokenizer(cfg.model)
        scorer = ApiScorer(f"http://127.0.0.1:{server.server_port}/score", tokenizer)
        ids = [tokenizer.encode("hello", add_special_tokens=False), tokenizer.encode("hi", add_special_tokens=False)]
        assert scorer(ids).tolist() == [5.0, 2.0]
        assert received[0]["messages"] == ["hello", "hi"]
        with pytest.raises(ModelError, match="returned 1 scores for 2"):
            scorer.score_texts(["bad", "x"])
    finally:
        server.shutdown()


def test_ppo_resume_matches_the_uninterrupted_run(tiny_chatml_model, tmp_path):
    """4 steps straight vs 2 steps, a checkpoint, and 2 resumed steps: the same per-step losses."""
    from tunery.model.loader import load_model, load_tokenizer
    from tunery.train.ppo import PPO_STATE_FILE, VALUE_HEAD_FILE, ppo_trainer

    def scorer(sequences):
        return torch.tensor([float(seq[-1] < LOW) for seq in sequences])

    from transformers import TrainerCallback

    class StopAtStep2(TrainerCallback):  # the run is cut off after step 2, as SIGTERM would do
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                control.should_training_stop = True

    def train(out, max_steps, resume=None, callbacks=None):
        cfg = config(tiny_chatml_model, out, stage="ppo", max_steps=max_steps, per_device_train_batch_size=4,
                     max_new_tokens=2, ppo_epochs=1, learning_rate=1e-2, save_strategy="steps", save_steps=2,
                     logging_steps=1)
        tokenizer = load_tokenizer(cfg.model)
        model = load_model(tokenizer, cfg.model, cfg.finetuning, is_trainable=True, training_args=cfg.training)
        trainer = ppo_trainer(cfg, model, tokenizer, pairwise_dataset(tokenizer), scorer, callbacks=callbacks)
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    straight = train(tmp_path / "a", 4)
    first = train(tmp_path / "b", 4, callbacks=[StopAtStep2()])
    assert first.state.global_step == 2
    checkpoint = tmp_path / "b" / "checkpoint-2"
    for name in (VALUE_HEAD_FILE, PPO_STATE_FILE, "optimizer.pt", "trainer_state.json"):
        assert (checkpoint / name).is_file(), name
    resumed = train(tmp_path / "b", 4, resume=str(checkpoint))
    assert resumed.state.global_step == 4
    losses = logged(straight, "loss")
    assert logged(first, "loss") == pytest.approx(losses[:2], abs=1e-4)
    assert logged(resumed, "loss")[-2:] == pytest.approx(losses[2:], abs=1e-4)
