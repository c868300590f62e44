"""Stage ``ppo``: Tunery's own PPO (trl 1.x no longer ships one), in one readable module.

Each step: sample replies to a buffer of prompts with the generation arguments, score them with the
reward model (``rewards.load_reward_scorer``), turn scores into per-token rewards with a KL penalty to
the frozen reference, estimate advantages with GAE on a value head, then run ``ppo_epochs`` passes of
clipped policy and value losses over mini-batches. The pieces follow Ziegler et al. (2019) and
Schulman et al. (2017) with the defaults LLaMA-Factory used through trl 0.x.

Why a ``transformers.Trainer`` subclass with its own ``train``: the optimizer/scheduler, the callbacks
(trainer_log.jsonl, signals), checkpoints and ``save_model`` stay the ones every other stage uses; only
the loop differs. The reference model for LoRA is the base with the adapter switched off, so no
second copy sits in memory; ``ref_model`` (or a frozen copy for full/freeze) otherwise.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import Trainer

from tunery.data import DatasetModule, get_dataset
from tunery.logging import get_logger
from tunery.model.loader import load_model
from tunery.train.pref_common import is_peft, load_reference_model, to_prompt_columns
from tunery.train.rewards import load_reward_scorer
from tunery.train.trainer import build_trainer

logger = get_logger(__name__)

PPO_STATE_FILE = "ppo_state.json"  # adaptive KL coefficient and score statistics, for resuming
VALUE_HEAD_FILE = "value_head.safetensors"
PLOT_KEYS = ("loss", "reward", "kl")


@dataclass
class PPOSettings:
    """The PPO knobs (LLaMA-Factory's names where it has them; the rest are trl 0.x's defaults)."""

    ppo_epochs: int = 4
    ppo_buffer_size: int = 1
    ppo_target: float = 6.0
    ppo_score_norm: bool = False
    ppo_whiten_rewards: bool = False
    init_kl_coef: float = 0.2
    kl_horizon: int = 10000
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    gamma: float = 1.0
    lam: float = 0.95

    @classmethod
    def from_finetuning(cls, ft: Any) -> PPOSettings:
        return cls(ppo_epochs=ft.ppo_epochs, ppo_buffer_size=ft.ppo_buffer_size, ppo_target=ft.ppo_target,
                   ppo_score_norm=ft.ppo_score_norm, ppo_whiten_rewards=ft.ppo_whiten_rewards)


# ---------------------------------------------------------------------------- small pieces
class AdaptiveKLController:
    """KL coefficient that grows when the measured KL exceeds ``target`` and shrinks below it."""

    def __init__(self, init: float, target: float, horizon: int) -> None:
        self.value, self.target, self.horizon = init, target, horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        error = max(min(current_kl / self.target - 1, 0.2), -0.2)
        self.value *= 1 + error * n_steps / self.horizon


class RunningMoments:
    """Running mean/std of the scores, for ``ppo_score_norm``."""

    def __init__(self) -> None:
        self.mean, self.var, self.count = 0.0, 1.0, 1e-4

    def update(self, x: torch.Tensor) -> None:
        n = x.numel()
        mean, var = float(x.mean()), float(x.var(unbiased=False)) if n > 1 else 0.0
        delta, total = mean - self.mean, self.count + n
        self.var = (self.var * self.count + var * n + delta**2 * self.count * n / total) / total
        self.mean += delta * n / total
        self.count = total

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / math.sqrt(self.var + 1e-8)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    return out if shift_mean else out + mean


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and returns over the reply tokens (masked positions are 0)."""
    values, rewards = values * mask, rewards * mask
    advantages = torch.zeros_like(rewards)
    last = torch.zeros(rewards.size(0), device=rewards.device)
    for t in reversed(range(rewards.size(1))):
        next_value = values[:, t + 1] if t + 1 < rewards.size(1) else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = delta + gamma * lam * last
        advantages[:, t] = last
    returns = advantages + values
    return masked_whiten(advantages, mask).detach() * mask, returns.detach()


def ppo_losses(logprobs: torch.Tensor, old_logprobs: torch.Tensor, values: torch.Tensor, old_values: torch.Tensor,
               advantages: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, s: PPOSettings
               ) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped policy loss + ``vf_coef`` x clipped value loss, averaged over reply tokens."""
    ratio = torch.exp(logprobs - old_logprobs)
    pg = torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - s.cliprange, 1 + s.cliprange))
    clipped_values = old_values + (values - old_values).clamp(-s.cliprange_value, s.cliprange_value)
    vf = 0.5 * torch.max((values - returns) ** 2, (clipped_values - returns) ** 2)
    pg_loss, vf_loss = masked_mean(pg, mask), masked_mean(vf, mask)
    stats = {"policy_loss": float(pg_loss), "value_loss": float(vf_loss),
             "clipfrac": float(masked_mean((ratio - 1).abs().gt(s.cliprange).float(), mask))}
    return pg_loss + s.vf_coef * vf_loss, stats


class PolicyWithValueHead(nn.Module):
    """The causal LM (or its LoRA PeftModel) plus a scalar value head on its last hidden state."""

    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        self.policy = policy
        hidden = policy.config.get_text_config().hidden_size
        self.v_head = nn.Linear(hidden, 1)
        nn.init.zeros_(self.v_head.weight)
        nn.init.zeros_(self.v_head.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # left-padded prompts
        out = self.policy(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          output_hidden_states=True, use_cache=False)
        values = self.v_head(out.hidden_states[-1].to(self.v_head.weight.dtype)).squeeze(-1)
        return out.logits, values


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, start: int) -> torch.Tensor:
    """Log-probabilities of ``input_ids[:, start:]`` given everything before them."""
    logits = logits[:, start - 1: -1].float()
    return torch.log_softmax(logits, dim=-1).gather(-1, input_ids[:, start:, None]).squeeze(-1)


# ---------------------------------------------------------------------------- the trainer
class PPOTrainer(Trainer):
    """transformers.Trainer whose ``train`` runs PPO rollouts and updates (see the module docstring)."""

    def __init__(self, *args: Any, scorer: Any, ppo: PPOSettings, generation: dict[str, Any],
                 stop_token_ids: list[int], ref_model: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.scorer, self.ppo, self.generation = scorer, ppo, generation
        self.stop_token_ids, self.ref_model = stop_token_ids, ref_model
        self.kl_ctl = AdaptiveKLController(ppo.init_kl_coef, ppo.ppo_target, ppo.kl_horizon)
        self.score_moments = RunningMoments()

    # ----------------------------------------------------------------- rollouts
    def _left_pad(self, prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(p) for p in prompts)
        pad = self.processing_class.pad_token_id
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompts):
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        return ids.to(self.args.device), mask.to(self.args.device)

    @torch.no_grad()
    def generate(self, prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
        """Sample one reply per prompt; returns (ids, attention mask, reply ids cut after the stop token)."""
        policy = self.model.policy
        ids, mask = self._left_pad(prompts)
        policy.eval()
        out = policy.generate(input_ids=ids, attention_mask=mask, eos_token_id=self.stop_token_ids,
                              pad_token_id=self.processing_class.pad_token_id, **self.generation)
        policy.train()
        replies = []
        for row in out[:, ids.size(1):].tolist():
            cut = next((i + 1 for i, t in enumerate(row) if t in self.stop_token_ids), len(row))
            replies.append(row[:cut] or row[:1])
        return ids, mask, replies

    def _sequences(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, replies: list[list[int]]
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(input ids, attention mask, reply mask) for left-padded prompts + right-padded replies."""
        width = max(len(r) for r in replies)
        reply_ids = torch.full((len(replies), width), self.processing_class.pad_token_id, dtype=torch.long)
        reply_mask = torch.zeros_like(reply_ids)
        for i, r in enumerate(replies):
            reply_ids[i, : len(r)] = torch.tensor(r)
            reply_mask[i, : len(r)] = 1
        reply_ids, reply_mask = reply_ids.to(prompt_ids.device), reply_mask.to(prompt_ids.device)
        return torch.cat([prompt_ids, reply_ids], 1), torch.cat([prompt_mask, reply_mask], 1), reply_mask

    def _reference_logprobs(self, input_ids: torch.Tensor, mask: torch.Tensor, start: int) -> torch.Tensor:
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        if self.ref_model is not None:
            logits = self.ref_model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids).logits
        else:  # LoRA: the base with the adapter off is the reference
            with self.model.policy.disable_adapter():
                logits = self.model.policy(input_ids=input_ids, attention_mask=mask, position_ids=position_ids).logits
        return token_logprobs(logits, input_ids, start)

    @torch.no_grad()
    def rollout(self, prompts: list[list[int]]) -> dict[str, Any]:
        """Generate, score, and compute old log-probs, values, KL-penalised rewards and advantages."""
        prompt_ids, prompt_mask, replies = self.generate(prompts)
        scores = self.scorer([p + r for p, r in zip(prompts, replies)]).to(self.args.device).float()
        raw_scores = scores.clone()
        if self.ppo.ppo_score_norm:
            self.score_moments.update(scores)
            scores = self.score_moments.normalize(scores)
        input_ids, mask, reply_mask = self._sequences(prompt_ids, prompt_mask, replies)
        start = prompt_ids.size(1)
        logits, values = self.model(input_ids, mask)
        logprobs = token_logprobs(logits, input_ids, start)
        values = values[:, start - 1: -1]
        ref_logprobs = self._reference_logprobs(input_ids, mask, start)
        reply_mask = reply_mask.float()
        kl = (logprobs - ref_logprobs) * reply_mask
        rewards = -self.kl_ctl.value * kl
        last = reply_mask.sum(1).long() - 1
        rewards[torch.arange(rewards.size(0)), last] += scores
        if self.ppo.ppo_whiten_rewards:
            rewards = masked_whiten(rewards, reply_mask, shift_mean=False) * reply_mask
        advantages, returns = gae(rewards, values, reply_mask, self.ppo.gamma, self.ppo.lam)
        return {"input_ids": input_ids, "mask": mask, "reply_mask": reply_mask, "start": start,
                "logprobs": logprobs, "values": values, "advantages": advantages, "returns": returns,
                "scores": raw_scores, "kl": float(kl.sum(1).mean())}

    # ----------------------------------------------------------------- updates
    def _minibatch_loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        logits, values = self.model(batch["input_ids"], batch["mask"])
        start = batch["start"]
        logprobs = token_logprobs(logits, batch["input_ids"], start)
        values = values[:, start - 1: -1]
        return ppo_losses(logprobs, batch["logprobs"], values, batch["values"], batch["advantages"],
                          batch["returns"], batch["reply_mask"], self.ppo)

    def ppo_step(self, buffer: list[dict[str, Any]]) -> dict[str, float]:
        """``ppo_epochs`` passes over the buffer's mini-batches, one optimizer step per accumulation group."""
        accumulation = max(self.args.gradient_accumulation_steps, 1)
        stats: dict[str, list[float]] = {}
        self.model.train()
        for _ in range(self.ppo.ppo_epochs):
            order = torch.randperm(len(buffer)).tolist()
            for i, index in enumerate(order):
                loss, batch_stats = self._minibatch_loss(buffer[index])
                (loss / accumulation).backward()
                stats.setdefault("loss", []).append(float(loss))
                for key, value in batch_stats.items():
                    stats.setdefault(key, []).append(value)
                if (i + 1) % accumulation == 0 or i + 1 == len(order):
                    if self.args.max_grad_norm:
                        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.args.max_grad_norm)
                    self.optimizer.step()
                    self.optimizer.zero_grad()
        self.lr_scheduler.step()
        return {k: sum(v) / len(v) for k, v in stats.items()}

    # ----------------------------------------------------------------- the loop
    def total_steps(self) -> int:
        per_step = self.args.per_device_train_batch_size * max(self.args.gradient_accumulation_steps, 1)
        per_step *= self.ppo.ppo_buffer_size
        if self.args.max_steps and self.args.max_steps > 0:
            return self.args.max_steps
        return max(1, math.ceil(len(self.train_dataset) / per_step * self.args.num_train_epochs))

    def _prompt_batches(self):
        """Endless mini-batches of prompt ids (reshuffled each pass unless disable_shuffling made it sequential)."""
        mini = self.args.per_device_train_batch_size
        generator = torch.Generator().manual_seed(self.args.seed)
        sequential = self.args.train_sampling_strategy == "sequential"
        while True:
            n = len(self.train_dataset)
            order = list(range(n)) if sequential else torch.randperm(n, generator=generator).tolist()
            for i in range(0, len(order) - mini + 1 if len(order) >= mini else 1, mini):
                yield [list(self.train_dataset[j]["prompt_ids"]) for j in order[i: i + mini]]

    def train(self, resume_from_checkpoint: str | None = None, **_: Any) -> Any:
        from transformers.trainer_utils import TrainOutput

        steps = self.total_steps()
        self.create_optimizer_and_scheduler(num_training_steps=steps)
        if resume_from_checkpoint:
            self._resume(resume_from_checkpoint)
        self.state.max_steps = steps
        self.state.logging_steps = self.args.logging_steps
        self.state.save_steps = self.args.save_steps
        self.control = self.callback_handler.on_train_begin(self.args, self.state, self.control)
        mini_batches = self.args.gradient_accumulation_steps * self.ppo.ppo_buffer_size
        prompts = self._prompt_batches()
        for _ in range(self.state.global_step * mini_batches):  # the prompts a resumed run already used
            next(prompts)
        total_loss, start_step = 0.0, self.state.global_step
        while self.state.global_step < steps and not self.control.should_training_stop:
            self.control = self.callback_handler.on_step_begin(self.args, self.state, self.control)
            buffer = [self.rollout(next(prompts)) for _ in range(mini_batches)]
            stats = self.ppo_step(buffer)
            mean_kl = sum(b["kl"] for b in buffer) / len(buffer)
            self.kl_ctl.update(mean_kl, self.args.per_device_train_batch_size * mini_batches)
            self.state.global_step += 1
            prompts_seen = self.state.global_step * self.args.per_device_train_batch_size * mini_batches
            self.state.epoch = prompts_seen / max(len(self.train_dataset), 1)
            self.state.num_input_tokens_seen += int(sum(b["mask"].sum() for b in buffer))
            total_loss += stats["loss"]
            self.control = self.callback_handler.on_step_end(self.args, self.state, self.control)
            if self.state.global_step % max(int(self.args.logging_steps), 1) == 0 or self.state.global_step == steps:
                scores = torch.cat([b["scores"] for b in buffer])
                self.log({"loss": round(stats["loss"], 4), "reward": round(float(scores.mean()), 4),
                          "kl": round(mean_kl, 4), "kl_coef": round(self.kl_ctl.value, 4),
                          "policy_loss": round(stats["policy_loss"], 4), "value_loss": round(stats["value_loss"], 4),
                          "clipfrac": round(stats["clipfrac"], 4),
                          "learning_rate": self.lr_scheduler.get_last_lr()[0]})
            if self.control.should_save:
                self._save_checkpoint(self.model, trial=None)
                self.control = self.callback_handler.on_save(self.args, self.state, self.control)
        self.control = self.callback_handler.on_train_end(self.args, self.state, self.control)
        done = max(self.state.global_step - start_step, 1)
        return TrainOutput(self.state.global_step, total_loss / done, {"train_loss": total_loss / done})

    def _resume(self, checkpoint: str) -> None:
        """Policy, value head, optimizer, scheduler, step, RNG and KL coefficient from ``checkpoint``.

        Trainer's own resume cannot do it: the checkpoint holds the policy in its sft format (model
        or adapter) plus the value head, not the wrapper's state dict.
        """
        from safetensors.torch import load_file
        from transformers import TrainerState

        policy = self.model.policy
        if is_peft(policy):
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(policy, load_file(os.path.join(checkpoint, "adapter_model.safetensors")))
        else:
            from transformers.trainer_utils import load_sharded_checkpoint

            if os.path.isfile(os.path.join(checkpoint, "model.safetensors")):
                policy.load_state_dict(load_file(os.path.join(checkpoint, "model.safetensors")), strict=False)
            else:
                load_sharded_checkpoint(policy, checkpoint, strict=False)
        self.model.v_head.load_state_dict(load_file(os.path.join(checkpoint, VALUE_HEAD_FILE)))
        self._load_optimizer_and_scheduler(checkpoint)
        self.state = TrainerState.load_from_json(os.path.join(checkpoint, "trainer_state.json"))
        self._load_rng_state(checkpoint)
        state_file = os.path.join(checkpoint, PPO_STATE_FILE)
        if os.path.isfile(state_file):
            with open(state_file, encoding="utf-8") as f:
                saved = json.load(f)
            self.kl_ctl.value = saved["kl_coef"]
            self.score_moments.mean, self.score_moments.var, self.score_moments.count = saved["score_moments"]
        logger.info("ppo resumed from %s at step %d", checkpoint, self.state.global_step)

    # ----------------------------------------------------------------- saving
    def _save(self, output_dir: str | None = None, state_dict: Any = None) -> None:
        """The policy (model or adapter) as sft saves it, plus the value head beside it."""
        from safetensors.torch import save_file

        output_dir = output_dir or self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        self.model.policy.save_pretrained(output_dir)
        save_file({k: v.contiguous() for k, v in self.model.v_head.state_dict().items()},
                  os.path.join(output_dir, VALUE_HEAD_FILE))
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        moments = self.score_moments
        with open(os.path.join(output_dir, PPO_STATE_FILE), "w", encoding="utf-8") as f:
            json.dump({"kl_coef": self.kl_ctl.value, "score_moments": [moments.mean, moments.var, moments.count]}, f)


def prompt_collator(features: list[dict[str, Any]]) -> dict[str, Any]:
    """Unused by PPO's own loop; Trainer needs a collator at construction."""
    return {"prompt_ids": [f["prompt_ids"] for f in features]}


def ppo_trainer(cfg: Any, model: Any, tokenizer: Any, train_dataset: Any, scorer: Any, *,
                ref_model: Any = None, stop_token_ids: list[int] | None = None,
                callbacks: list | None = None, settings: PPOSettings | None = None) -> PPOTrainer:
    """A PPOTrainer for ``cfg``; ``settings`` overrides the PPO knobs read from ``cfg.finetuning``."""
    if ref_model is None and not is_peft(model):
        raise ValueError("full/freeze PPO needs a reference model (load_reference_model)")
    generation = cfg.generation.to_generate_kwargs()
    generation.pop("num_beams", None)
    generation.pop("length_penalty", None)
    stop = list(stop_token_ids or [tokenizer.eos_token_id])
    return build_trainer(
        cfg, PolicyWithValueHead(model), tokenizer, train_dataset=to_prompt_columns(train_dataset),
        data_collator=prompt_collator, trainer_cls=PPOTrainer, callbacks=callbacks,
        scorer=scorer, ppo=settings or PPOSettings.from_finetuning(cfg.finetuning), generation=generation,
        stop_token_ids=stop, ref_model=ref_model,
    )


class PPOStage:
    """ppo: Tunery's PPO against a reward model (``reward_model``), on prompt-only data."""

    name = "ppo"
    plot_keys = PLOT_KEYS

    def load_data(self, cfg: Any, tokenizer: Any, template: Any) -> DatasetModule:
        return get_dataset(cfg, tokenizer, template, self.name)

    def create_trainer(self, cfg: Any, tokenizer: Any, template: Any, data: DatasetModule,
                       callbacks: list | None = None) -> PPOTrainer:
        """Load the policy, the reward scorer and the reference, build the PPOTrainer."""
        model = load_model(tokenizer, cfg.model, cfg.finetuning, is_trainable=True, training_args=cfg.training)
        scorer = load_reward_scorer(cfg, tokenizer, model)
        ref_model = load_reference_model(cfg, tokenizer, model)
        stop = template.stop_token_ids(tokenizer) if template is not None else None
        return ppo_trainer(cfg, model, tokenizer, data.train_dataset, scorer, ref_model=ref_model,
                           stop_token_ids=stop, callbacks=callbacks)
