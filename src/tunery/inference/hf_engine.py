"""The transformers backend: ``model.generate`` with left-padded batches and threaded streaming."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from tunery.errors import ConfigError
from tunery.inference.engine import Engine, Response, TextStream
from tunery.inference.generation import cut_at_stop, held_back
from tunery.inference.prompting import resolve_template
from tunery.model.loader import load_model, load_tokenizer

if TYPE_CHECKING:
    from tunery.config import RunConfig

STREAM_TIMEOUT_S = 600.0  # a generation thread that dies without ending its stream must not hang the reader


class _Cancelled(StoppingCriteria):
    """Ends generation when the reader of a stream is gone (e.g. an API client disconnected)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class _CountingStreamer(TextIteratorStreamer):
    """TextIteratorStreamer that also counts generated tokens and remembers the last one."""

    def __init__(self, tokenizer: Any, **kwargs: Any) -> None:
        super().__init__(tokenizer, skip_prompt=True, timeout=STREAM_TIMEOUT_S, **kwargs)
        self.generated = 0
        self.last_token: int | None = None
        self._seen_prompt = False

    def put(self, value: torch.Tensor) -> None:
        if self._seen_prompt:  # the first call carries the prompt
            flat = value.reshape(-1)
            self.generated += int(flat.numel())
            if flat.numel():
                self.last_token = int(flat[-1])
        self._seen_prompt = True
        super().put(value)


class HuggingFaceEngine(Engine):
    """Generation with transformers on the loaded model (adapters merged by the loader)."""

    backend = "huggingface"

    def __init__(self, model: Any, tokenizer: Any, template: Any, generating_args: Any, model_name: str = "tunery") -> None:
        super().__init__(tokenizer, template, generating_args, model_name)
        self.model = model
        self.skip_special_tokens = getattr(generating_args, "skip_special_tokens", True)

    @classmethod
    def from_config(cls, cfg: RunConfig) -> HuggingFaceEngine:
        if not cfg.model.model_name_or_path:
            raise ConfigError("model_name_or_path is not set", hint="give it in the config or as --model_name_or_path")
        tokenizer = load_tokenizer(cfg.model)
        template = resolve_template(cfg, tokenizer)
        model = load_model(tokenizer, cfg.model, cfg.finetuning, is_trainable=False)
        name = os.path.basename(str(cfg.model.model_name_or_path).rstrip("/")) or "tunery"
        return cls(model, tokenizer, template, cfg.generation, name)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _pad_left(self, prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left padding, so every row's last token is its generation prompt (what generate continues)."""
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.stop_token_ids()[0]
        width = max(len(p) for p in prompts)
        ids = [[pad] * (width - len(p)) + list(p) for p in prompts]
        mask = [[0] * (width - len(p)) + [1] * len(p) for p in prompts]
        return (torch.tensor(ids, dtype=torch.long, device=self.device),
                torch.tensor(mask, dtype=torch.long, device=self.device))

    def _hf_kwargs(self, gen: dict[str, Any]) -> tuple[dict[str, Any], list[str], int]:
        kwargs = self.generate_kwargs(gen)
        stops = kwargs.pop("stop", [])
        n = int(kwargs.get("num_return_sequences", 1))
        if n > 1 and not kwargs.get("do_sample") and kwargs.get("num_beams", 1) == 1:
            kwargs["num_return_sequences"] = 1  # greedy gives n identical answers: generate one, copy it
        kwargs["eos_token_id"] = self.stop_token_ids()
        kwargs["pad_token_id"] = self.tokenizer.pad_token_id
        if stops:
            kwargs["stop_strings"] = stops
            kwargs["tokenizer"] = self.tokenizer
        return kwargs, stops, n

    def batch_generate(self, prompts: list[list[int]], **gen: Any) -> list[Response]:
        if not prompts:
            return []
        kwargs, stops, n = self._hf_kwargs(gen)
        input_ids, attention_mask = self._pad_left(prompts)
        with self.lock, torch.inference_mode():
            output = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        new_tokens = output[:, input_ids.shape[1]:].tolist()
        per_prompt = len(new_tokens) // len(prompts)
        stop_ids = set(self.stop_token_ids())
        responses = []
        for row, tokens in enumerate(new_tokens):
            prompt = prompts[row // per_prompt]
            responses.extend([self._to_response(tokens, len(prompt), stop_ids, stops)] * (n // per_prompt))
        return responses

    def _to_response(self, tokens: list[int], prompt_len: int, stop_ids: set[int], stops: list[str]) -> Response:
        """Cut at the first end-of-turn token (padding follows it), decode, cut at stop strings."""
        end = next((i for i, t in enumerate(tokens) if t in stop_ids), None)
        finish = "stop" if end is not None else "length"
        kept = tokens if end is None else tokens[:end]
        pad = self.tokenizer.pad_token_id
        while end is None and kept and kept[-1] == pad:  # a row stopped by a stop string is padded after it
            kept = kept[:-1]
        count = len(kept) + (1 if end is not None else 0)
        text = self.tokenizer.decode(kept, skip_special_tokens=self.skip_special_tokens)
        text, hit = cut_at_stop(text, stops)
        return Response(text=text, prompt_tokens=prompt_len, completion_tokens=count,
                        finish_reason="stop" if hit else finish)

    def stream_generate(self, prompt: list[int], **gen: Any) -> TextStream:
        kwargs, stops, _ = self._hf_kwargs(gen)
        kwargs["num_return_sequences"] = 1
        stream = TextStream(iter(()), prompt_tokens=len(prompt))
        stream._pieces = self._stream_pieces(prompt, kwargs, stops, stream)
        return stream

    def _stream_pieces(self, prompt: list[int], kwargs: dict[str, Any], stops: list[str], stream: TextStream) -> Iterator[str]:
        """Run generate in a thread and yield decoded text; the engine lock is held until it ends."""
        streamer = _CountingStreamer(self.tokenizer, skip_special_tokens=self.skip_special_tokens)
        cancel = threading.Event()
        failure: list[BaseException] = []
        input_ids, attention_mask = self._pad_left([prompt])
        criteria = StoppingCriteriaList([_Cancelled(cancel)])

        def work() -> None:
            try:
                with torch.inference_mode():
                    self.model.generate(input_ids=input_ids, attention_mask=attention_mask, streamer=streamer,
                                        stopping_criteria=criteria, **kwargs)
            except BaseException as exc:  # reported to the reader below instead of dying silently
                failure.append(exc)
                streamer.end()

        with self.lock:
            thread = threading.Thread(target=work, daemon=True)
            thread.start()
            pending, hit = "", False
            try:
                for piece in streamer:
                    pending += piece
                    if stops:
                        pending, hit = cut_at_stop(pending, stops)
                        if hit:
                            cancel.set()
                            break
                        safe = len(pending) - held_back(pending, stops)
                        if safe > 0:
                            yield pending[:safe]
                            pending = pending[safe:]
                    elif pending:
                        yield pending
                        pending = ""
                if pending:
                    yield pending
            finally:
                cancel.set()
                thread.join()
                if failure:
                    raise failure[0]
                stream.completion_tokens = streamer.generated
                ended = hit or streamer.last_token in set(self.stop_token_ids())
                stream.finish_reason = "stop" if ended else "length"
