"""Stage ``grpo`` (beyond LLaMA-Factory): group relative policy optimisation through trl's GRPOTrainer.

Prompts come from Tunery's datasets rendered by Tunery's template (the exact ids an sft run would
see, generation prompt included). Rewards are the sum of ``reward_funcs`` (``path/file.py:function``
or ``module:function``, trl's convention ``f(prompts, completions, completion_ids, **columns)``) and,
when ``reward_model`` is set, the trained reward model's score. ``num_generations`` replies are
sampled per prompt with the generation arguments; ``pref_beta`` weighs the KL to the reference (the
base with the LoRA adapter off).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tunery.errors import ConfigError
from tunery.logging import get_logger
from tunery.train.pref_common import drop_reference_adapter, to_prompt_columns, trl_config

logger = get_logger(__name__)

PLOT_KEYS = ("loss", "reward", "kl")


def prompt_dataset(dataset: Any, tokenizer: Any) -> Any:
    """Columns ``prompt`` (text, for reward functions and logs) and ``prompt_ids`` (what the model sees)."""
    dataset = to_prompt_columns(dataset)
    dataset = dataset.select_columns(["prompt_ids"])
    return dataset.map(lambda ex: {"prompt": tokenizer.decode(ex["prompt_ids"], skip_special_tokens=False)})


def scorer_reward(scorer: Callable[[list[list[int]]], Any]) -> Callable[..., list[float]]:
    """A trl reward function scoring prompt + reply ids with a reward model/adapter/API scorer."""
    def reward_model(prompts: list[str], completions: list[str], completion_ids: list[list[int]],
                     prompt_ids: list[list[int]], **_: Any) -> list[float]:
        return scorer([list(p) + list(c) for p, c in zip(prompt_ids, completion_ids)]).tolist()

    return reward_model


def _trainer_cls() -> type:
    from trl import GRPOTrainer

    class TokenizedGRPOTrainer(GRPOTrainer):
        """GRPOTrainer that generates from Tunery's prompt ids instead of re-rendering the text."""

        def _tokenize_prompts(self, prompts: list):  # noqa: ANN202
            # The text column is a decoding of Tunery's ids, kept for reward functions and logs; the
            # ids themselves come from the dataset so the model sees exactly the template's tokens.
            return [list(self._tunery_prompt_ids[p]) for p in prompts], None, {}

    return TokenizedGRPOTrainer


def grpo_config(cfg: Any, stop_token_ids: list[int] | None = None) -> Any:
    from trl import GRPOConfig

    gen = cfg.generation
    sampling = {"temperature": gen.temperature, "top_p": gen.top_p, "top_k": gen.top_k} if gen.do_sample else {
        "temperature": 1e-6}
    extra = {"eos_token_id": stop_token_ids} if stop_token_ids else None
    return trl_config(
        GRPOConfig, cfg.training, num_generations=cfg.finetuning.num_generations, beta=cfg.finetuning.pref_beta,
        max_completion_length=gen.max_new_tokens, repetition_penalty=gen.repetition_penalty,
        generation_kwargs=extra, remove_unused_columns=False, log_completions=False, **sampling,
    )


def build_trainer(cfg: Any, model: Any, tokenizer: Any, train_dataset: Any, reward_funcs: list[Callable],
                  *, stop_token_ids: list[int] | None = None, callbacks: list | None = None) -> Any:
    from tunery.train.continue_run import with_replanned_schedule
    from tunery.train.trainer import configure_training_args, standard_callbacks

    if not reward_funcs:
        raise ConfigError("stage grpo needs rewards", hint="set reward_funcs: path/file.py:function and/or reward_model")
    data = prompt_dataset(train_dataset, tokenizer)
    # GRPOTrainer takes no data_collator, so it is built here rather than by train.trainer.build_trainer,
    # with the same argument conventions and standard callbacks.
    args = configure_training_args(grpo_config(cfg, stop_token_ids))
    extra = list(callbacks or [])
    given = {type(c) for c in extra}
    all_callbacks = [c for c in standard_callbacks(cfg) if type(c) not in given] + extra
    trainer_cls = with_replanned_schedule(_trainer_cls())  # a continued run follows its own schedule
    trainer = trainer_cls(model=model, reward_funcs=reward_funcs, args=args, train_dataset=data,
                          processing_class=tokenizer, callbacks=all_callbacks)
    trainer._tunery_prompt_ids = dict(zip(data["prompt"], data["prompt_ids"]))
    drop_reference_adapter(trainer.model)
    return trainer


def run(cfg: Any, tokenizer: Any, template: Any, callbacks: list | None = None) -> Any:
    """Train with GRPO on ``cfg``'s prompts and write sft's outputs."""
    from tunery.data import get_dataset
    from tunery.model.loader import load_model
    from tunery.train.loop import fit
    from tunery.train.rewards import load_reward_funcs, load_reward_scorer

    ft = cfg.finetuning
    data = get_dataset(cfg, tokenizer, template, "grpo")
    model = load_model(tokenizer, cfg.model, ft, is_trainable=True, training_args=cfg.training)
    funcs: list[Callable] = load_reward_funcs(ft.reward_funcs)
    if ft.reward_model:
        funcs.append(scorer_reward(load_reward_scorer(cfg, tokenizer, model)))
    stop = template.stop_token_ids(tokenizer) if template is not None else None
    trainer = build_trainer(cfg, model, tokenizer, data.train_dataset, funcs, stop_token_ids=stop, callbacks=callbacks)
    return fit(trainer, cfg, plot_keys=PLOT_KEYS)
