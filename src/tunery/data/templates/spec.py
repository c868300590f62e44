"""One renderer for every builtin template, driven by a small declarative spec per family.

A family differs from another only in strings (turn headers, end-of-turn markers, default system
prompt) and a few switches (system folded into the first user turn, content trimmed, reasoning
blocks), so the builtins are data (:mod:`tunery.data.templates.builtin`) and this file is the
only code that turns messages into text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from tunery.data.templates.base import PROMPT_ROLE, Segment, Template, parse_tools
from tunery.data.templates.messages import is_assistant, parse_call_content
from tunery.data.templates.tools import format_calls, tools_prompt


@dataclass(frozen=True)
class TemplateSpec:
    """The strings of one chat format. ``{content}`` is the message text; ``{bos}``/``{eos}`` the tokenizer's.

    The trained span of an assistant turn is ``assistant`` (reply + end-of-turn marker); ``gen`` (the
    generation prompt) before it and ``assistant_tail``/``assistant_sep`` after it are not trained.
    """

    name: str
    official: str | None = None          # model id whose official chat template this reproduces
    prefix: str = ""                     # once, before everything (e.g. bos)
    system: str | None = "{content}"     # None: no system turn, the system text is folded into the first user
    system_in_user: str = "{system}\n\n{content}"  # first user turn's content when the system is folded
    user: str = "{content}"
    gen: str = ""                        # generation prompt: opens an assistant turn
    assistant: str = "{content}"
    assistant_tail: str = ""             # after every assistant turn
    assistant_sep: str = ""              # after an assistant turn that more messages follow
    end: str = ""                        # at the very end when no generation prompt is added
    tool: str = "{content}"              # a tool result (untrained)
    tool_open: str = ""                  # before a run of consecutive tool results (e.g. Qwen's one user turn)
    tool_close: str = ""                 # after such a run
    tool_gen: str | None = None          # generation prompt after a tool result, where it is not ``gen``
    default_system: str = ""
    stop_words: tuple[str, ...] = ()
    tool_format: str = "default"
    strip: bool = False                  # the official template trims message content
    thinking: str | None = None          # "qwen3": Qwen3's official rule; "lf": LLaMA-Factory's reasoning templates
    thought: tuple[str, str] = ("<think>\n", "\n</think>\n\n")  # "lf": what opens and closes a reasoning block
    empty_thought: str | None = None     # "lf": the block written for a reply without reasoning (default open+close)
    note: str = ""                       # what differs from the official template, shown in docs


@dataclass
class SpecTemplate(Template):
    """A builtin template: renders messages with a :class:`TemplateSpec`."""

    spec: TemplateSpec = field(default_factory=lambda: TemplateSpec(name="default"))
    bos: str = ""
    eos: str = ""

    def _fmt(self, pattern: str, **values: str) -> str:
        # str.replace, not str.format: message text may contain braces
        out = pattern.replace("{bos}", self.bos).replace("{eos}", self.eos)
        for key, value in values.items():
            out = out.replace("{" + key + "}", value)
        return out

    def render(self, messages: list[dict], tools: Any = None, add_generation_prompt: bool = False) -> list[Segment]:
        spec = self.spec
        strip = (lambda s: s.strip()) if spec.strip else (lambda s: s)
        messages = list(messages)
        system = self.default_system or ""
        if messages and messages[0].get("role") == "system":
            system = messages.pop(0).get("content", "")
        tool_list = parse_tools(tools)
        tool_text = tools_prompt(self.tool_format or spec.tool_format, tool_list) if tool_list else ""
        if tool_text:
            system = system + tool_text if system else tool_text.lstrip("\n")

        segments: list[Segment] = []
        add = segments.append
        if spec.prefix:
            add(Segment(self._fmt(spec.prefix), PROMPT_ROLE))
        fold_system = spec.system is None and bool(system)
        if system and spec.system is not None:
            add(Segment(self._fmt(spec.system, content=strip(system)), "system"))
        last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
        after_tool = False
        turn = 0
        for i, msg in enumerate(messages):
            role, content = msg.get("role"), msg.get("content", "") or ""
            if role == "user":
                if fold_system:
                    content = self._fmt(spec.system_in_user, system=strip(system), content=strip(content))
                    fold_system = False
                else:
                    content = strip(content)
                add(Segment(self._fmt(spec.user, content=content), "user"))
            elif is_assistant(role):
                if role == "function_call":
                    content = format_calls(self.tool_format or spec.tool_format, parse_call_content(content))
                if spec.thinking == "lf":
                    opening, lead, reply = self._lf_reasoning(strip(content), is_last=i + 1 == len(messages),
                                                              prompt=add_generation_prompt)
                else:
                    lead = ""
                    opening, reply = self._reasoning(strip(content), after_last_user=i > last_user,
                                                     is_last=i + 1 == len(messages))
                add(Segment(self._gen(after_tool) + opening, PROMPT_ROLE))
                add(Segment(lead + self._fmt(spec.assistant, content=reply), "assistant", turn))
                turn += 1
                tail = spec.assistant_tail + (spec.assistant_sep if i + 1 < len(messages) else "")
                if tail:
                    add(Segment(self._fmt(tail), PROMPT_ROLE))
            elif role in ("tool", "observation"):
                first = i == 0 or messages[i - 1].get("role") not in ("tool", "observation")
                last = i + 1 == len(messages) or messages[i + 1].get("role") not in ("tool", "observation")
                text = (spec.tool_open if first else "") + spec.tool + (spec.tool_close if last else "")
                add(Segment(self._fmt(text, content=strip(content)), "tool"))
            elif role == "system":
                add(Segment(self._fmt(spec.system or "{content}", content=strip(content)), "system"))
            after_tool = role in ("tool", "observation")
        if add_generation_prompt:
            add(Segment(self._gen(after_tool) + self._reasoning("", after_last_user=True, prompt_only=True)[0],
                        PROMPT_ROLE))
        elif spec.end:
            add(Segment(self._fmt(spec.end), PROMPT_ROLE))
        return [s for s in segments if s.text or s.role == "assistant"]

    def _gen(self, after_tool: bool) -> str:
        spec = self.spec
        return self._fmt(spec.tool_gen if after_tool and spec.tool_gen is not None else spec.gen)

    def _reasoning(self, content: str, *, after_last_user: bool, is_last: bool = True,
                   prompt_only: bool = False) -> tuple[str, str]:
        """(untrained opening, trained reply) for reasoning templates; ("", content) for the others.

        Qwen3's official template keeps a ``<think>`` block only on replies after the last user turn
        (on every reply with ``preserve_thinking``) and writes an empty one when there is no reasoning.
        In non-thinking mode the empty block is part of the generation prompt, so it is not trained.
        """
        if self.spec.thinking == "lf" and prompt_only:
            return self._lf_reasoning("", is_last=True, prompt=True, prompt_only=True)[0], ""
        if self.spec.thinking != "qwen3":
            return "", content
        thinking = self.enable_thinking is not False
        if prompt_only:
            return ("" if thinking else "<think>\n\n</think>\n\n"), ""
        reasoning, answer = "", content
        if "</think>" in content:
            reasoning, answer = content.split("</think>", 1)
            reasoning = reasoning.split("<think>")[-1].strip("\n")
            answer = answer.lstrip("\n")
        if self.preserve_thinking and reasoning:
            after_last_user = True
        if not after_last_user or (not is_last and not reasoning):
            return "", answer
        block = f"<think>\n{reasoning}\n</think>\n\n"
        if not reasoning and not thinking:
            return block, answer
        return "", block + answer

    def _lf_reasoning(self, content: str, *, is_last: bool, prompt: bool,
                      prompt_only: bool = False) -> tuple[str, str, str]:
        """(untrained opening, trained lead, reply) of LLaMA-Factory's reasoning templates (``ReasoningTemplate``).

        ``prompt``: the conversation ends in a generation prompt (inference). An added empty block
        comes before the template's assistant text, as LLaMA-Factory adds its ids there.

        Training text (no generation prompt): with ``enable_thinking: false`` every reply loses its
        reasoning; a reply without a reasoning block gets an empty one, trained in thinking mode and
        part of the prompt otherwise. With ``mask_history`` (and without ``preserve_thinking``) earlier
        replies lose their reasoning and get no block. Inference (a generation prompt follows): earlier
        replies lose their reasoning unless ``preserve_thinking``; in non-thinking mode the prompt ends
        with the empty block.
        """
        opening, closing = self.spec.thought
        empty = self.spec.empty_thought if self.spec.empty_thought is not None else opening + closing
        if prompt_only:
            return ("" if self.enable_thinking else empty), "", ""
        if prompt:
            return "", "", (content if self.preserve_thinking else self._drop_thought(content))
        history_plain = not is_last and self.mask_history and not self.preserve_thinking
        if self.enable_thinking is False or history_plain:
            content = self._drop_thought(content)
            if history_plain:
                return "", "", content
        if opening.strip() in content or closing.strip() in content:
            return "", "", content
        return (empty, "", content) if not self.enable_thinking else ("", empty, content)

    def _drop_thought(self, content: str) -> str:
        opening, closing = self.spec.thought
        pattern = re.escape(opening) + "(.*?)" + re.escape(closing)
        return re.sub(pattern, "", content, flags=re.DOTALL).lstrip("\n")
