"""The transformers backend: ``model.generate`` with left-padded batches and threaded streaming.

:meth:`HuggingFaceEngine.generate_rows` serves several requests in one left-padded ``generate``
call: a streamer hands each row's new token to that row only, and a stopping criterion ends each
row at its own end-of-turn token, stop string, token limit or cancellation (finished rows are
padded by transformers and produce no more text).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer
from transformers.generation.streamers import BaseStreamer

from tunery.data.media import SINGULAR, MediaEncoder, MediaSettings
from tunery.data.processors import encode_record
from tunery.errors import ConfigError
from tunery.inference.continuous import DecodeBatch, Decoding, decoding_of, has_plain_cache, left_padded
from tunery.inference.engine import Engine, GenerationJob, Joiners, Response, TextStream
from tunery.inference.generation import (
    cut_at_stop,
    describe_generation,
    held_back,
    resolve_generating_args,
    user_generation_keys,
)
from tunery.inference.media import media_kinds, media_record
from tunery.inference.prompting import normalize_tools, resolve_template, with_system
from tunery.logging import get_logger
from tunery.model.few_rows import use_few_row_linear
from tunery.model.loader import load_model, load_tokenizer, resolve
from tunery.model.multimodal import family_of, load_processor

logger = get_logger(__name__)

if TYPE_CHECKING:
    from tunery.config import RunConfig

# A lone request joining a running batch waits up to this many decoding steps for a second one, so
# that both prompts are prefilled in one forward pass: on the CPU a prefill of 2 prompts costs about
# what one costs (SmolLM2-135M: 316 against 279 ms), each prefill stalls every live row, and a step
# costs a fraction of a prefill (bench/serve.py measures the effect).
JOIN_WAIT_STEPS = 3
STREAM_TIMEOUT_S = 600.0  # a generation thread that dies without ending its stream must not hang the reader


def few_row_linear_wanted() -> bool:
    """``TUNERY_FEW_ROW_LINEAR``: on unless set to 0/false/no/off. Raises ConfigError for another value."""
    value = os.environ.get("TUNERY_FEW_ROW_LINEAR", "").strip().lower()
    if value in ("", "1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"TUNERY_FEW_ROW_LINEAR must be 1 or 0, got {value!r}",
                      hint="unset it (on) or set TUNERY_FEW_ROW_LINEAR=0 to keep torch's nn.Linear")


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


class _Row:
    """Decoding state of one job inside a batched ``generate`` call."""

    def __init__(self, job: GenerationJob, limit: int, stops: list[str], copies: int, engine: HuggingFaceEngine) -> None:
        self.job, self.limit, self.stops, self.copies = job, limit, stops, copies
        self.tokenizer, self.skip_special = engine.tokenizer, engine.skip_special_tokens
        self.tokens: list[int] = []  # reply tokens, the end-of-turn token excluded
        self.count = 0  # tokens generated for this row, the end-of-turn token included
        self.done: str | None = None  # finish reason once the row has ended
        self.incremental = job.on_text is not None or bool(stops)
        self.start, self.prefix, self.emitted = 0, "", 0  # tokens[start:] decode after prefix; chars sent

    def step(self, token: int, stop_ids: set[int]) -> None:
        self.count += 1
        if token in stop_ids:
            self.end("stop")
            return
        self.tokens.append(token)
        if self.incremental:
            self._advance(final=False)
        if self.done is None and self.count >= self.limit:
            self.end("length")
        if self.done is None and self.job.cancel.is_set():
            self.end("cancelled")

    def end(self, reason: str) -> None:
        if self.done is None:
            self.done = reason
            if reason != "cancelled" and self.incremental:
                self._advance(final=True)

    def _advance(self, final: bool) -> None:
        """Decode the new text, end the row at a stop string, send what can no longer become one."""
        text = self.prefix + self.tokenizer.decode(self.tokens[self.start:], skip_special_tokens=self.skip_special)
        if text.endswith("\ufffd") and not final:  # half of a multi-byte character: wait for the rest
            return
        if text.endswith("\n"):  # decode from here on next time (as transformers' TextStreamer does)
            self.prefix, self.start = text, len(self.tokens)
        text, hit = cut_at_stop(text, self.stops)
        safe = len(text) if (hit or final) else len(text) - held_back(text, self.stops)
        if safe > self.emitted:
            self._send(text[self.emitted:safe])
            self.emitted = safe
        if hit:
            self.done = "stop"

    def _send(self, piece: str) -> None:
        if self.job.on_text is None:
            return
        try:
            self.job.on_text(piece)
        except Exception:  # the reader is gone: stop this row
            self.job.cancel.set()

    def response(self, prompt_tokens: int) -> list[Response]:
        text, hit = cut_at_stop(self.tokenizer.decode(self.tokens, skip_special_tokens=self.skip_special), self.stops)
        reason = self.done or "length"
        if hit and reason == "length":
            reason = "stop"
        return [Response(text, prompt_tokens, self.count, reason)] * self.copies


class _RowStreamer(BaseStreamer):
    """Hands each generated token to its own row (the first ``put`` carries the prompts)."""

    def __init__(self, rows: list[_Row], stop_ids: set[int]) -> None:
        self.rows, self.stop_ids, self._seen_prompt = rows, stop_ids, False

    def put(self, value: torch.Tensor) -> None:
        if not self._seen_prompt:
            self._seen_prompt = True
            return
        for row, token in zip(self.rows, value.reshape(-1).tolist()):
            if row.done is None:
                row.step(int(token), self.stop_ids)

    def end(self) -> None:
        pass


class _RowsDone(StoppingCriteria):
    """Per row: ended (end-of-turn, stop string, its own token limit) or cancelled."""

    def __init__(self, rows: list[_Row]) -> None:
        self.rows = rows

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        for row in self.rows:
            if row.done is None and row.job.cancel.is_set():
                row.end("cancelled")
        return torch.tensor([row.done is not None for row in self.rows], dtype=torch.bool, device=input_ids.device)


class HuggingFaceEngine(Engine):
    """Generation with transformers on the loaded model (adapters merged by the loader)."""

    backend = "huggingface"

    def __init__(self, model: Any, tokenizer: Any, template: Any, generating_args: Any, model_name: str = "tunery") -> None:
        super().__init__(tokenizer, template, generating_args, model_name)
        self.model = model
        self.skip_special_tokens = getattr(generating_args, "skip_special_tokens", True)
        self.media: MediaEncoder | None = None  # a multimodal model's processor + the run's media settings
        self.media_family: Any = None  # its tunery.model.multimodal.Family (which media kinds it takes)
        self._plain_cache: bool | None = None  # continuous batching possible (checked on first use)

    @classmethod
    def from_config(cls, cfg: RunConfig) -> HuggingFaceEngine:
        if not cfg.model.model_name_or_path:
            raise ConfigError("model_name_or_path is not set", hint="give it in the config or as --model_name_or_path")
        few_rows = few_row_linear_wanted()  # checked before anything loads
        tokenizer = load_tokenizer(cfg.model)
        template = resolve_template(cfg, tokenizer)
        model = load_model(tokenizer, cfg.model, cfg.finetuning, is_trainable=False)
        name = os.path.basename(str(cfg.model.model_name_or_path).rstrip("/")) or "tunery"
        generating_args, sources = resolve_generating_args(
            cfg.generation, user_generation_keys(cfg.raw), getattr(model, "generation_config", None))
        logger.info(describe_generation(generating_args, sources))
        if few_rows:  # decoding steps of a batch read each weight once
            replaced = use_few_row_linear(model)
            if replaced:
                logger.debug("%d linear layers take the few-row CPU path (TUNERY_FEW_ROW_LINEAR=0 turns it off)", replaced)
        engine = cls(model, tokenizer, template, generating_args, name)
        path = resolve(cfg.model).path
        family = family_of(path) if os.path.isdir(path) else None
        if family is not None:  # media reach the model through its processor, encoded as in training (media_inputs)
            processor = load_processor(path, trust_remote_code=cfg.model.trust_remote_code)
            engine.media = MediaEncoder(processor, MediaSettings.from_model_args(cfg.model))
            engine.processor = processor
            engine.media_family = family
            engine.media_dir = cfg.data.media_dir or cfg.data.dataset_dir
        return engine

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def context_length(self) -> int | None:
        config = self.model.config
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        value = getattr(text_config, "max_position_embeddings", None)
        return int(value) if isinstance(value, int) and value > 0 else None

    def generate_rows(self, jobs: list[GenerationJob], joiners: Joiners | None = None) -> None:
        """Serve ``jobs`` (equal :meth:`batch_key`) in one batch; resolves every future, never raises.

        Greedy and plainly sampled rows decode in a continuous batch (``inference/continuous.py``):
        each row's reply goes out as soon as it ends, and jobs ``joiners`` hands over join between
        steps. Other settings use one left-padded ``generate`` call (rows stop on their own, the
        call runs to the longest). Either way greedy rows give the tokens one-at-a-time generation
        gives: the attention mask hides the padding. Beam search and sampled ``n > 1`` are served
        one job at a time; a prompt with media is served on its own.
        """
        live = []
        media = [job for job in jobs if job.extra is not None]
        if media:
            super().generate_rows(media)
        for job in jobs:
            if job.extra is not None:
                continue
            if job.cancel.is_set():
                job.finish(job.cancelled_response())
            else:
                live.append(job)
        if not live:
            return
        try:
            kwargs, stops, n = self._hf_kwargs(live[0].gen)
            if kwargs.get("num_beams", 1) > 1 or kwargs.get("num_return_sequences", 1) > 1:
                super().generate_rows(live)
                return
            rows = [self._new_row(job) for job in live]
            decoding = self._continuous_decoding(kwargs)
            if decoding is not None:
                self._decode_continuously(rows, decoding, joiners)
                return
            for key in ("stop_strings", "tokenizer", "max_length"):
                kwargs.pop(key, None)
            kwargs["max_new_tokens"] = max(row.limit for row in rows)
            input_ids, attention_mask = self._pad_left([job.prompt for job in live])
            stop_ids = set(self.stop_token_ids())
            with self.lock, torch.inference_mode():
                self.model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                    streamer=_RowStreamer(rows, stop_ids),
                                    stopping_criteria=StoppingCriteriaList([_RowsDone(rows)]), **kwargs)
        except Exception as exc:
            for job in live:
                job.fail(exc)
            return
        for row in rows:
            row.end("length")  # rows still open when generate returned reached the longest limit
            row.job.finish(row.response(len(row.job.prompt)))

    def _new_row(self, job: GenerationJob) -> _Row:
        job_kwargs, job_stops, job_n = self._hf_kwargs(job.gen)
        return _Row(job, self._row_limit(job, job_kwargs), job_stops, job_n, self)

    def _continuous_decoding(self, kwargs: dict[str, Any]) -> Decoding | None:
        """How a continuous batch picks tokens for these settings, or None when they need ``generate``."""
        if self._plain_cache is None:
            self._plain_cache = has_plain_cache(self.model)
        if not self._plain_cache:
            return None
        served = {k: v for k, v in kwargs.items() if k not in ("stop_strings", "tokenizer")}
        return decoding_of(served, getattr(self.model, "generation_config", None))

    def _decode_continuously(self, rows: list[_Row], decoding: Decoding, joiners: Joiners | None) -> None:
        """Decode ``rows`` step by step; rows that end leave with their reply, ``joiners``' jobs come in."""
        stop_ids = set(self.stop_token_ids())
        batch = DecodeBatch(self.model, decoding, self._pad_token_id)
        live: list[_Row] = []
        waiting = rows
        waited = 0  # steps the first waiting row has waited for company
        try:
            with self.lock, torch.inference_mode():
                while waiting or live:
                    if waiting and (not live or len(waiting) > 1 or waited >= JOIN_WAIT_STEPS):
                        # prefill the newcomers together; their first tokens come from the prefill
                        tokens = batch.admit([row.job.prompt for row in waiting])
                        stepped = list(zip(waiting, tokens))
                        live.extend(waiting)
                        waiting, waited = [], 0
                    else:
                        stepped = list(zip(live, batch.step()))
                        waited += bool(waiting)
                    for row, token in stepped:
                        row.step(token, stop_ids)
                    if any(row.done is not None for row in live):
                        for row in live:
                            if row.done is not None:
                                row.job.finish(row.response(len(row.job.prompt)))
                        batch.keep([i for i, row in enumerate(live) if row.done is None])
                        live = [row for row in live if row.done is None]
                    for job in joiners(len(live) + len(waiting)) if joiners is not None else []:
                        if job.cancel.is_set():
                            job.finish(job.cancelled_response())
                        else:
                            waiting.append(self._new_row(job))
        except Exception as exc:
            for row in live + waiting:
                row.job.fail(exc)

    def _row_limit(self, job: GenerationJob, kwargs: dict[str, Any]) -> int:
        """The job's max_new_tokens (or what max_length leaves), never past the context window."""
        limit = kwargs.get("max_new_tokens")
        if not limit or limit <= 0:
            limit = max(1, int(kwargs.get("max_length") or 1024) - len(job.prompt))
        context = self.context_length
        if context is not None:
            limit = min(limit, max(1, context - len(job.prompt)))
        return int(limit)

    @property
    def _pad_token_id(self) -> int:
        """The tokenizer's padding id, else its first end-of-turn id (masked out either way)."""
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else self.stop_token_ids()[0]

    def _pad_left(self, prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        return left_padded(prompts, self._pad_token_id, self.device)

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

    def media_inputs(self, messages: list[dict], tools: Any = None,
                     system: str | None = None) -> tuple[list[int], dict[str, Any]]:
        """Prompt ids and media tensors of a conversation with images/videos/audios, encoded exactly as
        training encodes a prediction prompt: the chat template renders it, the processor expands each
        placeholder (files loaded with the run's ``image_max_pixels``, ``video_fps``, ``video_maxlen``,
        ``audio_sampling_rate``, ...), and the media tensors are the collator's (``batch_features``).

        Raises ConfigError for a kind the model does not take (naming kind and model), a remote URL
        or a missing file; DataError for a file that cannot be decoded.
        """
        if self.media is None:
            return super().media_inputs(messages, tools, system)
        takes = {f"{kind}s" for kind in self.media_family.media}
        for kind in media_kinds(messages):
            if kind not in takes:
                raise ConfigError(f"{self.model_name} ({self.media_family.model_type}) takes no {SINGULAR[kind]}: it "
                                  f"reads {' and '.join(self.media_family.media)} only",
                                  hint=f"send {' or '.join(self.media_family.media)}, or load a model that reads "
                                       f"{SINGULAR[kind]}")
        record = media_record(with_system(messages, system), self.media_dir)
        record["tools"] = normalize_tools(tools)
        ids, _ = encode_record(record, self.tokenizer, self.template, self.media, add_generation_prompt=True)
        features = self.media.batch_features([record], input_ids=torch.tensor([ids], dtype=torch.long))
        return ids, {key: self._to_model(value) for key, value in features.items()}

    def _to_model(self, value: Any) -> Any:
        """A processor tensor on the model's device; pixel/audio features in the model's dtype (a bf16
        model on a GPU would refuse float32 pixels: training's autocast is not there at inference)."""
        if not isinstance(value, torch.Tensor):
            return value
        dtype = getattr(self.model, "dtype", None)
        if torch.is_floating_point(value) and isinstance(dtype, torch.dtype) and dtype.is_floating_point:
            return value.to(self.device, dtype=dtype)
        return value.to(self.device)

    def generate_media(self, prompt: list[int], extra: dict[str, Any], **gen: Any) -> list[Response]:
        kwargs, stops, n = self._hf_kwargs(gen)
        input_ids, attention_mask = self._pad_left([prompt])
        with self.lock, torch.inference_mode():
            output = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **extra, **kwargs)
        stop_ids = set(self.stop_token_ids())
        rows = output[:, input_ids.shape[1]:].tolist()
        responses = [self._to_response(tokens, len(prompt), stop_ids, stops) for tokens in rows]
        return responses * (n // len(responses)) if len(responses) < n else responses

    def stream_media(self, prompt: list[int], extra: dict[str, Any], **gen: Any) -> TextStream:
        kwargs, stops, _ = self._hf_kwargs(gen)
        kwargs["num_return_sequences"] = 1
        stream = TextStream(iter(()), prompt_tokens=len(prompt))
        stream._pieces = self._stream_pieces(prompt, {**kwargs, **extra}, stops, stream)
        return stream

    def stream_generate(self, prompt: list[int], **gen: Any) -> TextStream:
        kwargs, stops, _ = self._hf_kwargs(gen)
        kwargs["num_return_sequences"] = 1
        stream = TextStream(iter(()), prompt_tokens=len(prompt))
        stream._pieces = self._stream_pieces(prompt, kwargs, stops, stream)
        return stream

    def _stream_pieces(self, prompt: list[int], kwargs: dict[str, Any], stops: list[str], stream: TextStream) -> Iterator[str]:
        """Run generate in a thread (which holds the engine lock) and yield decoded text."""
        streamer = _CountingStreamer(self.tokenizer, skip_special_tokens=self.skip_special_tokens)
        cancel = threading.Event()
        failure: list[BaseException] = []
        input_ids, attention_mask = self._pad_left([prompt])
        criteria = StoppingCriteriaList([_Cancelled(cancel)])

        def work() -> None:
            try:
                with self.lock, torch.inference_mode():
                    if cancel.is_set():  # the reader left while this waited for the model
                        streamer.end()
                        return
                    self.model.generate(input_ids=input_ids, attention_mask=attention_mask, streamer=streamer,
                                        stopping_criteria=criteria, **kwargs)
            except BaseException as exc:  # reported to the reader below instead of dying silently
                failure.append(exc)
                streamer.end()

        # the lock is taken by the generating thread only: a reader that stops reading never holds it
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
