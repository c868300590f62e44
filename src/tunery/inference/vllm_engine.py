"""The vLLM backend (``infer_backend: vllm``): paged-attention batching on a CUDA GPU.

Prompts are encoded by Tunery's template and handed to vLLM as token ids, so both backends see the
same prompt for the same conversation. vLLM's offline ``LLM`` class has no token streaming, so a
streamed reply arrives as one piece; batch prediction is where this backend pays off.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from tunery.errors import ConfigError, ResourceError, require
from tunery.inference.engine import Engine, Response, TextStream
from tunery.inference.generation import cut_at_stop, resolve_generating_args, user_generation_keys
from tunery.inference.prompting import resolve_template
from tunery.model.loader import load_tokenizer, resolve

if TYPE_CHECKING:
    from tunery.config import RunConfig


def check_lora_adapters(adapters: list[str]) -> None:
    """vLLM serves LoRA adapters only: ConfigError for another peft type (an OFT adapter, say)."""
    for adapter in adapters:
        config_file = os.path.join(adapter, "adapter_config.json")
        if not os.path.isfile(config_file):
            continue  # a hub id or a missing folder: vLLM reports it
        with open(config_file, encoding="utf-8") as f:
            kind = str(json.load(f).get("peft_type", "LORA")).upper()
        if kind != "LORA":
            raise ConfigError(f"infer_backend: vllm serves LoRA adapters only; {adapter} is a peft {kind} adapter",
                              hint="merge it first with `tunery export`, or use infer_backend: huggingface")


def check_vllm_available() -> Any:
    """The vllm module, or a DependencyError / ResourceError that says what is missing."""
    vllm = require("vllm", "infer_backend: vllm", "vllm")
    import torch

    if not torch.cuda.is_available():
        raise ResourceError(
            "infer_backend: vllm needs a CUDA GPU, and none is visible on this machine",
            hint="use infer_backend: huggingface (the default), which runs on a CPU",
        )
    return vllm


def engine_args(cfg: RunConfig, model_path: str) -> dict[str, Any]:
    """Keyword arguments for ``vllm.LLM`` from the model settings (vllm_* names as in LLaMA-Factory)."""
    m = cfg.model
    args: dict[str, Any] = {
        "model": model_path,
        "trust_remote_code": m.trust_remote_code,
        "max_model_len": m.vllm_maxlen,
        "gpu_memory_utilization": m.vllm_gpu_util,
        "enforce_eager": m.vllm_enforce_eager,
        "dtype": "auto" if m.infer_dtype == "auto" else m.infer_dtype,
        "download_dir": m.cache_dir,
    }
    if m.adapters:
        args.update(enable_lora=True, max_lora_rank=m.vllm_max_lora_rank)
    extra = m.vllm_config
    if isinstance(extra, str):
        try:
            extra = json.loads(extra)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"vllm_config is not a JSON object: {exc.msg}") from exc
    args.update(extra or {})
    return args


def _generation_config(path: str) -> Any:
    """The model folder's generation_config.json as a dict, or None (no file, unreadable, a hub id)."""
    file = os.path.join(path, "generation_config.json")
    try:
        with open(file, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class VllmEngine(Engine):
    """Generation with ``vllm.LLM`` on token-id prompts; one LoRA adapter at a time."""

    backend = "vllm"

    def __init__(self, llm: Any, tokenizer: Any, template: Any, generating_args: Any, model_name: str,
                 lora_request: Any = None) -> None:
        super().__init__(tokenizer, template, generating_args, model_name)
        self.llm = llm
        self.lora_request = lora_request

    @classmethod
    def from_config(cls, cfg: RunConfig) -> VllmEngine:
        check_lora_adapters(cfg.model.adapters)
        vllm = check_vllm_available()
        tokenizer = load_tokenizer(cfg.model)
        template = resolve_template(cfg, tokenizer)
        path = resolve(cfg.model).path
        llm = vllm.LLM(**engine_args(cfg, str(path)))
        lora = None
        if cfg.model.adapters:
            from vllm.lora.request import LoRARequest

            lora = LoRARequest("default", 1, cfg.model.adapters[0])
        name = str(cfg.model.model_name_or_path).rstrip("/").split("/")[-1]
        generating_args, _ = resolve_generating_args(cfg.generation, user_generation_keys(cfg.raw),
                                                     _generation_config(str(path)))
        return cls(llm, tokenizer, template, generating_args, name, lora)

    def _sampling_params(self, gen: dict[str, Any]) -> tuple[Any, list[str]]:
        from vllm import SamplingParams

        kw = self.generate_kwargs(gen)
        if kw.get("num_beams", 1) > 1:
            raise ConfigError("infer_backend: vllm does not do beam search here", hint="set num_beams: 1")
        greedy = not kw.get("do_sample")
        stops = kw.get("stop", [])
        params = SamplingParams(
            n=int(kw.get("num_return_sequences", 1)),
            temperature=0.0 if greedy else float(kw.get("temperature", 1.0)),
            top_p=1.0 if greedy else float(kw.get("top_p", 1.0)),
            top_k=-1 if greedy or not kw.get("top_k") else int(kw["top_k"]),
            repetition_penalty=float(kw.get("repetition_penalty", 1.0)),
            max_tokens=int(kw.get("max_new_tokens") or 1024),
            stop=stops or None,
            stop_token_ids=self.stop_token_ids(),
            skip_special_tokens=getattr(self.generating_args, "skip_special_tokens", True),
        )
        return params, stops

    def batch_generate(self, prompts: list[list[int]], **gen: Any) -> list[Response]:
        from vllm.inputs import TokensPrompt

        params, stops = self._sampling_params(gen)
        with self.lock:
            outputs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params,
                                        lora_request=self.lora_request, use_tqdm=False)
        responses = []
        for prompt, out in zip(prompts, outputs):
            for choice in out.outputs:
                text, hit = cut_at_stop(choice.text, stops)
                finish = "stop" if hit or choice.finish_reason == "stop" else "length"
                responses.append(Response(text, len(prompt), len(choice.token_ids), finish))
        return responses

    def stream_generate(self, prompt: list[int], **gen: Any) -> TextStream:
        gen = {**gen, "num_return_sequences": 1}
        stream = TextStream(iter(()), prompt_tokens=len(prompt))

        def pieces():
            (response,) = self.batch_generate([prompt], **gen)
            stream.completion_tokens, stream.finish_reason = response.completion_tokens, response.finish_reason
            yield response.text

        stream._pieces = pieces()
        return stream
