"""Where rewards come from for ppo and grpo: a reward model, a LoRA reward adapter, an HTTP API, or code.

A *scorer* turns full sequences (prompt + reply token ids) into one number each:
- ``ModelScorer``: a sequence-classification reward model (what ``stage: rm`` saves with ``full``/``freeze``,
  or the base + a reward adapter merged in memory);
- ``AdapterScorer``: a reward LoRA adapter loaded beside the policy's own adapter on the same base,
  so no second copy of the base sits in memory (``reward_model_type: lora``);
- ``ApiScorer``: POSTs the decoded texts to an HTTP endpoint (``reward_model_type: api``).
``load_reward_funcs`` imports plain Python reward functions (``path/file.py:function`` or
``module:function``) in trl's reward-function convention.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import torch
from transformers import AutoModelForSequenceClassification

from tunery.config.finetuning_args import split_list
from tunery.errors import ConfigError, ModelError
from tunery.logging import get_logger
from tunery.model.loader import default_device, pick_dtype, quantization_config, resolve
from tunery.model.multimodal import family_of, sequence_classifier_class
from tunery.plugins import load_callable
from tunery.train.pref_common import is_peft, model_args_for

logger = get_logger(__name__)

REWARD_ADAPTER = "reward"


# ---------------------------------------------------------------------------- reward models
def load_sequence_classifier(tokenizer: Any, model_args: Any, training_args: Any = None) -> Any:
    """The model at ``model_args`` with a one-output score head (a reward model), loaded like the policy."""
    path = resolve(model_args).path
    kwargs: dict[str, Any] = {
        "num_labels": 1, "dtype": pick_dtype(model_args, training_args),
        "trust_remote_code": model_args.trust_remote_code, "cache_dir": model_args.cache_dir,
        "token": model_args.hf_hub_token,
    }
    quant = quantization_config(model_args, kwargs["dtype"])
    if quant is not None:
        kwargs["quantization_config"] = quant
        kwargs["device_map"] = {"": default_device()}
    family = family_of(path) if os.path.isdir(path) else None
    try:
        if family is None:
            model = AutoModelForSequenceClassification.from_pretrained(path, **kwargs)
        else:  # a vision/audio-language model: the score head on its language model, media inputs kept
            model, info = sequence_classifier_class(family).from_pretrained(path, output_loading_info=True, **kwargs)
            _check_only_head_is_new(info, model_args.model_name_or_path)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load {model_args.model_name_or_path} as a reward model: {exc}") from exc
    model.config.pad_token_id = tokenizer.pad_token_id
    return model


def _check_only_head_is_new(info: dict[str, Any], name: str) -> None:
    """A multimodal reward model's weights must all come from the checkpoint but the new score head:
    a family whose layout differs from its base model's would otherwise train a random model."""
    missing = sorted(k for k in info.get("missing_keys") or () if not k.startswith("score."))
    if missing:
        raise ModelError(f"{name} does not load as a reward model: {len(missing)} weights are not in the "
                         f"checkpoint (e.g. {missing[0]})",
                         hint="this family's layout is not supported for stage rm; train it with stage dpo")


def _reward_adapter_base(path: str) -> str | None:
    config = os.path.join(path, "adapter_config.json")
    if not os.path.isfile(config):
        return None
    with open(config, encoding="utf-8") as f:
        return json.load(f).get("base_model_name_or_path")


class ModelScorer:
    """Scores with a separate sequence-classification reward model."""

    def __init__(self, model: Any, pad_token_id: int) -> None:
        self.model = model.eval()
        self.model.requires_grad_(False)
        self.pad_token_id = pad_token_id

    @torch.no_grad()
    def __call__(self, sequences: list[list[int]]) -> torch.Tensor:
        input_ids, attention_mask = pad_right(sequences, self.pad_token_id, self.model.device)
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits[:, 0].float().cpu()


class AdapterScorer:
    """Scores with a reward LoRA adapter (trained by ``stage: rm``) switched on over the policy's base.

    The adapter's LoRA weights load as a second adapter of the policy's PeftModel and its score head
    as a small linear layer; scoring switches the active adapter, so the base is shared.
    """

    def __init__(self, policy: Any, path: str, pad_token_id: int) -> None:
        from peft import LoraConfig
        from peft.utils import load_peft_weights, set_peft_model_state_dict

        config = LoraConfig.from_pretrained(path)
        config.modules_to_save = None
        config.task_type = "CAUSAL_LM"
        weights = load_peft_weights(path, device="cpu")
        score = {k: v for k, v in weights.items() if k.split(".")[-2] == "score"}
        if "weight" not in {k.split(".")[-1] for k in score}:
            raise ModelError(f"{path} has no score head", hint="point reward_model at an adapter saved by stage: rm")
        lora = {k: v for k, v in weights.items() if k not in score}
        policy.add_adapter(REWARD_ADAPTER, config)
        set_peft_model_state_dict(policy, lora, adapter_name=REWARD_ADAPTER)
        for name, param in policy.named_parameters():
            if f".{REWARD_ADAPTER}." in name:
                param.requires_grad_(False)
        weight = next(v for k, v in score.items() if k.endswith("weight"))
        self.head = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        self.head.weight.data.copy_(weight)
        self.head.requires_grad_(False)
        self.policy, self.pad_token_id = policy, pad_token_id

    @torch.no_grad()
    def __call__(self, sequences: list[list[int]]) -> torch.Tensor:
        from trl.trainer.utils import use_adapter

        device = next(self.policy.parameters()).device
        input_ids, attention_mask = pad_right(sequences, self.pad_token_id, device)
        with use_adapter(self.policy, REWARD_ADAPTER):
            hidden = self.policy(input_ids=input_ids, attention_mask=attention_mask,
                                 output_hidden_states=True).hidden_states[-1]
        last = attention_mask.sum(dim=1) - 1
        final = hidden[torch.arange(hidden.size(0), device=device), last]
        self.head.to(final.device, final.dtype)
        return self.head(final)[:, 0].float().cpu()


class ApiScorer:
    """Scores by POSTing ``{"model": ..., "messages": [text, ...]}``; the reply holds ``{"scores": [...]}``."""

    def __init__(self, url: str, tokenizer: Any, timeout: float = 60.0) -> None:
        self.url, self.tokenizer, self.timeout = url, tokenizer, timeout

    def score_texts(self, texts: list[str]) -> torch.Tensor:
        import urllib.request

        body = json.dumps({"model": "reward", "messages": texts}).encode()
        headers = {"Content-Type": "application/json"}
        if os.environ.get("REWARD_API_KEY"):
            headers["Authorization"] = f"Bearer {os.environ['REWARD_API_KEY']}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                scores = json.loads(response.read().decode())["scores"]
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"reward API {self.url} failed: {exc}",
                             hint='it must answer a POST of {"messages": [texts]} with {"scores": [floats]}') from exc
        if len(scores) != len(texts):
            raise ModelError(f"reward API {self.url} returned {len(scores)} scores for {len(texts)} texts")
        return torch.tensor([float(s) for s in scores])

    def __call__(self, sequences: list[list[int]]) -> torch.Tensor:
        return self.score_texts(self.tokenizer.batch_decode(sequences, skip_special_tokens=False))


def pad_right(sequences: list[list[int]], pad_id: int, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[i, : len(seq)] = 1
    return ids.to(device), mask.to(device)


def load_reward_classifier(cfg: Any, tokenizer: Any) -> Any:
    """``reward_model`` as one sequence-classification model (a reward adapter merged into its base)."""
    ft = cfg.finetuning
    path, adapters = ft.reward_model, ft.reward_model_adapters
    base = _reward_adapter_base(path)
    if base is not None:  # reward_model is itself an adapter folder: load its base, then it
        path, adapters = base, ",".join([path, *([adapters] if adapters else [])])
    args = model_args_for(cfg.model, path, None, ft.reward_model_quantization_bit)
    model = load_sequence_classifier(tokenizer, args)
    if adapters:
        from peft import PeftModel

        for adapter in [a.strip() for a in adapters.split(",") if a.strip()]:
            model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    return model.eval()


def load_reward_scorer(cfg: Any, tokenizer: Any, policy: Any = None) -> Callable[[list[list[int]]], torch.Tensor]:
    """The scorer ``cfg.finetuning`` asks for (``reward_model`` + ``reward_model_type``)."""
    ft = cfg.finetuning  # reward_model is set: config rule ppo_needs_reward_model
    kind = ft.reward_model_type
    if kind == "api" or ft.reward_model.startswith(("http://", "https://")):
        return ApiScorer(ft.reward_model, tokenizer)
    if kind == "lora":
        if policy is None or not is_peft(policy):
            raise ConfigError("reward_model_type: lora needs a LoRA policy (finetuning_type: lora)",
                              hint="use reward_model_type: full to load the reward model on its own")
        return AdapterScorer(policy, ft.reward_model, tokenizer.pad_token_id)
    return ModelScorer(load_reward_classifier(cfg, tokenizer), tokenizer.pad_token_id)


# ---------------------------------------------------------------------------- reward functions
def load_reward_func(spec: str) -> Callable[..., list[float]]:
    """``path/file.py:function`` or ``package.module:function`` -> the function."""
    return load_callable(spec, "reward_funcs")[1]


def load_reward_funcs(specs: str | None) -> list[Callable[..., list[float]]]:
    """Comma-separated ``reward_funcs`` -> functions (trl convention: ``f(prompts, completions, **kw)``)."""
    return [load_reward_func(spec) for spec in split_list(specs)]


def score_texts_with(funcs: list[Callable[..., list[float]]], prompts: list[str], completions: list[str],
                     **kwargs: Any) -> torch.Tensor:
    """Sum of the reward functions' scores for each (prompt, completion)."""
    total = torch.zeros(len(completions))
    for func in funcs:
        values = func(prompts=prompts, completions=completions, **kwargs)
        total += torch.tensor([0.0 if v is None else float(v) for v in values])
    return total
