"""Make the exported tokenizer carry the chat format the model was trained with.

When training used a builtin ``template:`` (e.g. ``chatml`` on a base model without a chat
template, or one that differs from the tokenizer's own), serving the export with the tokenizer's
old template would silently change the prompt format. Builtins are Python, not Jinja, so a Jinja
template is generated from the same per-role pieces the Ollama Modelfile uses, and checked to
render exactly what the Tunery template renders before it replaces the tokenizer's.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from tunery.data.template import check_template
from tunery.errors import ModelError
from tunery.export.modelfile import VERIFY_CONVERSATIONS, ChatPieces, derive_pieces
from tunery.logging import get_logger

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = get_logger(__name__)


def _lit(text: str) -> str:
    """A Jinja expression printing ``text``; expressions, unlike raw text, are immune to trim_blocks."""
    return "{{ " + json.dumps(text, ensure_ascii=False) + " }}" if text else ""


def jinja_template(pieces: ChatPieces) -> str:
    """A Hugging Face chat template (Jinja) that renders conversations from ``pieces``."""
    default = ""
    if pieces.default_system is not None:
        default = (
            "{% if messages[0]['role'] != 'system' %}"
            f"{_lit(pieces.system_prefix + pieces.default_system + pieces.system_suffix)}{{% endif %}}"
        )
    return (
        f"{_lit(pieces.bos)}{default}"
        "{% for message in messages %}"
        f"{{% if message['role'] == 'system' %}}{_lit(pieces.system_prefix)}{{{{ message['content'] }}}}"
        f"{_lit(pieces.system_suffix)}"
        f"{{% elif message['role'] == 'user' %}}{_lit(pieces.user_prefix)}{{{{ message['content'] }}}}"
        f"{_lit(pieces.user_suffix)}"
        f"{{% elif message['role'] == 'assistant' %}}{_lit(pieces.assistant_prefix)}{{{{ message['content'] }}}}"
        f"{_lit(pieces.assistant_suffix)}"
        "{% endif %}{% endfor %}"
        f"{{% if add_generation_prompt %}}{_lit(pieces.reply_prefix)}{{% endif %}}"
    )


def _is_builtin(template) -> bool:
    return template is not None and getattr(template, "name", "auto") != "auto"


def align_chat_template(tokenizer: PreTrainedTokenizerBase, template) -> bool:
    """Give ``tokenizer`` a Jinja chat template equal to the builtin ``template``; True if it changed.

    Nothing changes for ``template: auto`` (the tokenizer's own template is the training format) or
    when the tokenizer's template already renders the same.
    """
    if not _is_builtin(template):
        return False
    if getattr(tokenizer, "chat_template", None) and check_template(template, tokenizer) is None:
        return False

    def render(messages: list[dict], add_generation_prompt: bool) -> str:
        return template.render_text(messages, add_generation_prompt=add_generation_prompt)

    try:
        pieces = derive_pieces(render, getattr(tokenizer, "bos_token", None))
    except ModelError as exc:
        logger.warning("template '%s' cannot be written as a Jinja chat template (%s); the exported tokenizer "
                       "keeps its own chat template", template.name, exc)
        return False
    candidate = jinja_template(pieces)
    previous = tokenizer.chat_template
    tokenizer.chat_template = candidate
    checks = [(m, True) for m in VERIFY_CONVERSATIONS]
    checks += [([*m, {"role": "assistant", "content": "Done."}], False) for m in VERIFY_CONVERSATIONS]
    for messages, gen in checks:
        if tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen) != render(messages, gen):
            tokenizer.chat_template = previous
            logger.warning("the Jinja form of template '%s' does not match it; keeping the tokenizer's own",
                           template.name)
            return False
    logger.info("the exported tokenizer's chat template is now template '%s' (the format it was trained with)",
                template.name)
    return True
