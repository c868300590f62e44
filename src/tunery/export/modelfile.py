"""An Ollama ``Modelfile`` whose TEMPLATE and stop words reproduce the model's chat template.

Ollama does not run Jinja; its TEMPLATE is a Go template. Rather than translating Jinja, the
chat template is rendered with marker strings in place of message contents and the text between
the markers is read off: the prefix and suffix of each role, the text before the first message
(BOS), a default system prompt, and the generation prompt. ``render_like_ollama`` applies those
pieces the way the emitted Go template does, so tests can check it against the real template.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from tunery.errors import ModelError
from tunery.logging import get_logger

Render = Callable[[list[dict], bool], str]  # (messages, add_generation_prompt) -> prompt text

_SYS, _U1, _A1, _U2 = "SYSTEMMARKERQZ", "USERMARKERQZ1", "ASSISTANTMARKERQZ1", "USERMARKERQZ2"


@dataclass
class ChatPieces:
    """The fixed text around each message of a chat template."""

    bos: str
    system_prefix: str
    system_suffix: str
    user_prefix: str
    user_suffix: str
    assistant_prefix: str
    assistant_suffix: str
    default_system: str | None = None
    generation_prompt: str | None = None  # what opens the reply to generate (default: assistant_prefix)

    @property
    def reply_prefix(self) -> str:
        return self.assistant_prefix if self.generation_prompt is None else self.generation_prompt


def _split(text: str, markers: list[str]) -> list[str]:
    """The text between consecutive markers (len(markers) + 1 pieces)."""
    pieces, rest = [], text
    for marker in markers:
        if marker not in rest:
            raise ModelError("the chat template drops or rewrites message content", hint="")
        head, rest = rest.split(marker, 1)
        pieces.append(head)
    pieces.append(rest)
    return pieces


def _strip_suffix(text: str, suffix: str, what: str) -> str:
    if suffix and not text.endswith(suffix):
        raise ModelError(f"cannot derive an Ollama template: {what} is not a fixed string")
    return text[: len(text) - len(suffix)] if suffix else text


def derive_pieces(render: Render, bos_token: str | None = None) -> ChatPieces:
    """Read the per-role wrapping off a renderer by rendering conversations of marker strings."""
    user1 = {"role": "user", "content": _U1}
    asst1 = {"role": "assistant", "content": _A1}
    user2 = {"role": "user", "content": _U2}
    without_prompt = render([user1], False)
    with_prompt = render([user1], True)
    if not with_prompt.startswith(without_prompt):
        raise ModelError("cannot derive an Ollama template: the generation prompt is not appended at the end")
    # the generation prompt is exactly what add_generation_prompt appends; it may differ from the
    # assistant header inside the history (Qwen3 without thinking adds an empty think block)
    generation_prompt = with_prompt[len(without_prompt):]
    user_suffix = _split(without_prompt, [_U1])[1]
    head, u1_after, a1_after, _ = _split(render([user1, asst1, user2], True), [_U1, _A1, _U2])
    if not u1_after.startswith(user_suffix):
        raise ModelError("cannot derive an Ollama template: the text after a user message is not a fixed string")
    assistant_prefix = u1_after[len(user_suffix):]
    assistant_suffix = _split(render([user1, asst1], False), [_U1, _A1])[2]
    if not a1_after.startswith(assistant_suffix):
        raise ModelError("cannot derive an Ollama template: the end of an assistant turn changes with what follows")
    user_prefix = a1_after[len(assistant_suffix):]
    head = _strip_suffix(head, user_prefix, "the text before the first user message")
    sys_head, sys_after, _ = _split(render([{"role": "system", "content": _SYS}, user1], True), [_SYS, _U1])
    system_suffix = _strip_suffix(sys_after, user_prefix, "the text after the system message")
    default_system = None
    if head.startswith(sys_head) and head.endswith(system_suffix) and len(head) >= len(sys_head) + len(system_suffix):
        # the template writes a system block of its own when none is given
        default_system = head[len(sys_head): len(head) - len(system_suffix)]
        # a BOS written by the template goes before everything, unless the same token also opens
        # every turn (SmolLM2's tokenizer calls <|im_start|> its BOS): then it is part of the prefix
        bos = bos_token if bos_token and bos_token not in user_prefix and sys_head.startswith(bos_token) else ""
    else:
        bos = os.path.commonprefix([head, sys_head])  # fixed text before the first message, e.g. BOS
        if head != bos:
            raise ModelError("cannot derive an Ollama template: the text before the first message is not fixed")
    pieces = ChatPieces(bos, sys_head[len(bos):], system_suffix, user_prefix, user_suffix, assistant_prefix,
                        assistant_suffix, default_system, generation_prompt)
    _verify(render, pieces)
    return pieces


VERIFY_CONVERSATIONS = [
    [{"role": "user", "content": "Hi there"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"},
     {"role": "assistant", "content": "See you."}, {"role": "user", "content": "Wait"}],
]


def _verify(render: Render, pieces: ChatPieces) -> None:
    """Templates that treat turns unevenly (e.g. a system prompt folded into the first user turn)
    fit no per-role pattern; a mismatch on real conversations must not pass silently."""
    for messages in VERIFY_CONVERSATIONS:
        if render_like_ollama(pieces, messages) != render(messages, True):
            raise ModelError("cannot derive an Ollama template: the chat template treats turns differently "
                             "depending on their position")


def render_like_ollama(pieces: ChatPieces, messages: list[dict]) -> str:
    """What the Go template from :func:`go_template` produces for ``messages`` (for tests and docs)."""
    if pieces.default_system is not None and (not messages or messages[0]["role"] != "system"):
        messages = [{"role": "system", "content": pieces.default_system}, *messages]
    out = [pieces.bos]
    for i, message in enumerate(messages):
        last = i == len(messages) - 1
        role, content = message["role"], message["content"]
        if role == "system":
            out.append(pieces.system_prefix + content + pieces.system_suffix)
        elif role == "user":
            out.append(pieces.user_prefix + content + pieces.user_suffix)
        elif role == "assistant":
            out.append(pieces.assistant_prefix + content + ("" if last else pieces.assistant_suffix))
        if last and role != "assistant":
            out.append(pieces.reply_prefix)
    return "".join(out)


def _go_literal(text: str) -> str:
    """Literal text for a Go template: only ``{{`` needs quoting."""
    return text.replace("{{", '{{ "{{" }}')


def go_template(pieces: ChatPieces) -> str:
    """Ollama TEMPLATE over ``.Messages``; no ``{{-`` trimming, so newlines in the pieces survive."""
    g = _go_literal
    return (
        f"{g(pieces.bos)}{{{{ range $i, $_ := .Messages }}}}"
        "{{ $last := eq (len (slice $.Messages $i)) 1 }}"
        f'{{{{ if eq .Role "system" }}}}{g(pieces.system_prefix)}{{{{ .Content }}}}{g(pieces.system_suffix)}'
        f'{{{{ else if eq .Role "user" }}}}{g(pieces.user_prefix)}{{{{ .Content }}}}{g(pieces.user_suffix)}'
        f'{{{{ else if eq .Role "assistant" }}}}{g(pieces.assistant_prefix)}{{{{ .Content }}}}'
        f"{{{{ if not $last }}}}{g(pieces.assistant_suffix)}{{{{ end }}}}"
        "{{ end }}"
        f'{{{{ if and $last (ne .Role "assistant") }}}}{g(pieces.reply_prefix)}{{{{ end }}}}'
        "{{ end }}"
    )


def stop_words(pieces: ChatPieces, special_tokens: list[str], eos_token: str | None,
               template_stops: list[str] | None = None) -> list[str]:
    """Stop strings: the template's own, every special token that closes an assistant turn, and eos."""
    found = list(template_stops or [])
    found += [t for t in special_tokens if t and t in pieces.assistant_suffix]
    if eos_token:
        found.append(eos_token)
    return list(dict.fromkeys(w for w in found if w.strip()))


def build_modelfile(gguf_name: str, pieces: ChatPieces, stops: list[str], *, temperature: float | None = None) -> str:
    """The Modelfile text; ``ollama create NAME -f Modelfile`` in the same folder loads it."""
    lines = [f"FROM ./{gguf_name}", "", f'TEMPLATE """{go_template(pieces)}"""', ""]
    if pieces.default_system:
        lines += [f'SYSTEM """{pieces.default_system}"""', ""]
    lines += [f'PARAMETER stop "{_quote(word)}"' for word in stops]
    if temperature is not None:
        lines.append(f"PARAMETER temperature {temperature}")
    return "\n".join(lines) + "\n"


def _quote(word: str) -> str:
    return word.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def write_modelfile(out_dir, gguf_name: str, template, tokenizer, stop_ids: list[int]):
    """Write ``Modelfile`` next to the GGUF, from the Tunery template (or the tokenizer's own)."""
    from pathlib import Path

    if template is not None:
        def render(messages: list[dict], add_generation_prompt: bool) -> str:
            return template.render_text(messages, add_generation_prompt=add_generation_prompt)
    elif getattr(tokenizer, "chat_template", None):
        def render(messages: list[dict], add_generation_prompt: bool) -> str:
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    else:
        raise ModelError("no chat template to build the Ollama Modelfile from", hint="set template: (e.g. chatml)")
    try:
        pieces = derive_pieces(render, getattr(tokenizer, "bos_token", None))
    except ModelError as exc:
        return _write_without_template(Path(out_dir), gguf_name, tokenizer, stop_ids, str(exc))
    template_stops = [tokenizer.convert_ids_to_tokens(i) for i in stop_ids]
    specials = [str(t) for t in getattr(tokenizer, "all_special_tokens", [])]
    specials += [str(t) for t in (getattr(tokenizer, "added_tokens_decoder", {}) or {}).values() if t.special]
    stops = stop_words(pieces, list(dict.fromkeys(specials)), tokenizer.eos_token, template_stops)
    path = Path(out_dir) / "Modelfile"
    path.write_text(build_modelfile(gguf_name, pieces, stops), encoding="utf-8")
    return path


def _write_without_template(out_dir, gguf_name: str, tokenizer, stop_ids: list[int], reason: str):
    """A Modelfile with no TEMPLATE: Ollama then picks one from the chat template inside the GGUF."""
    get_logger(__name__).warning("%s; the Modelfile has no TEMPLATE and Ollama will use the chat template "
                                 "embedded in the GGUF", reason)
    stops = [tokenizer.convert_ids_to_tokens(i) for i in stop_ids] + [tokenizer.eos_token]
    lines = [f"FROM ./{gguf_name}", "", f"# TEMPLATE omitted: {reason}", ""]
    lines += [f'PARAMETER stop "{_quote(w)}"' for w in dict.fromkeys(w for w in stops if w)]
    path = out_dir / "Modelfile"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
