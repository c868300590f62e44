"""Generation settings shared by chat, predict, the API and the web UI."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class GeneratingArguments:
    do_sample: bool = field(default=True, metadata={"help": "Sample (true) or decode greedily (false)."})
    temperature: float = field(default=0.95, metadata={"help": "Sampling temperature.", "min": 0})
    top_p: float = field(default=0.7, metadata={"help": "Nucleus sampling probability mass.", "gt": 0, "max": 1})
    top_k: int = field(default=50, metadata={"help": "Sample among the k most likely tokens.", "min": 0})
    num_beams: int = field(default=1, metadata={"help": "Beam search width (1: no beam search).", "min": 1})
    max_length: int = field(default=1024, metadata={"help": "Max prompt + reply tokens (ignored with max_new_tokens).", "min": 1})
    max_new_tokens: int = field(default=1024, metadata={"help": "Max tokens generated per reply.",
                  "domain": "a token count; 0 or less means use max_length instead"})
    repetition_penalty: float = field(default=1.0, metadata={"help": "Penalty for repeated tokens (1: none).", "gt": 0})
    length_penalty: float = field(default=1.0, metadata={"help": "Beam search length penalty.",
                  "domain": "any real: an exponent on length, negative favours short beams"})
    skip_special_tokens: bool = field(default=True, metadata={"help": "Drop special tokens from decoded text."})

    def to_generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``model.generate`` (greedy when not sampling)."""
        kwargs = asdict(self)
        kwargs.pop("skip_special_tokens")
        if kwargs.get("max_new_tokens", -1) > 0:
            kwargs.pop("max_length")
        if not self.do_sample:
            for key in ("temperature", "top_p", "top_k"):
                kwargs.pop(key)
        return kwargs
