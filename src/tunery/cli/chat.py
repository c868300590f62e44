"""``tunery chat``: the terminal chat (REPL) with streamed replies, or one answer with --query.

``--query``, ``--system`` and ``--image`` are options of this command, not settings, so they are taken
out of the tokens before the config parser (which rejects unknown keys) sees them. ``--image PATH``
(or ``/image PATH`` in the REPL) attaches an image to the next message, for a multimodal model.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from tunery.cli import options

if TYPE_CHECKING:
    from tunery.inference.engine import Engine

CLEAR_WORDS = ("clear",)
EXIT_WORDS = ("exit", "quit")
OPTIONS = ("query", "system", "image")
IMAGE_COMMAND = "/image"


def pop_options(tokens: list[str]) -> tuple[dict[str, str], list[str]]:
    """Take ``--query TEXT`` / ``--system TEXT`` / ``--image PATH`` (or ``--query=TEXT``) out of ``tokens``."""
    return options.pop_flags(tokens, {name: True for name in OPTIONS})


class ChatSession:
    """The conversation so far; each answer is streamed to ``out`` and then kept in the history."""

    def __init__(self, engine: Engine, system: str | None = None, out: TextIO | None = None) -> None:
        self.engine = engine
        self.system = system
        self.out = out or sys.stdout
        self.history: list[dict] = []
        self.pending_images: list[str] = []  # attached with --image or /image, sent with the next message

    def attach(self, path: str) -> None:
        """Attach an image file to the next message (a relative path is read from the working folder)."""
        self.pending_images.append(str(Path(path).expanduser().resolve()))

    def ask(self, text: str) -> str:
        message: dict = {"role": "user", "content": text}
        if self.pending_images:
            message["images"] = self.pending_images
        self.history.append(message)
        reply = ""
        stream = None
        try:
            stream = self.engine.stream_chat(self.history, system=self.system)
            for piece in stream:
                reply += piece
                self.out.write(piece)
                self.out.flush()
        except BaseException:
            self.history.pop()  # a failed or interrupted turn is not part of the conversation
            raise
        else:
            self.pending_images = []
        finally:
            if stream is not None:
                stream.close()  # on Ctrl-C this stops the generation thread at once
        self.out.write("\n")
        self.history.append({"role": "assistant", "content": reply})
        return reply

    def clear(self) -> None:
        self.history.clear()
        self.pending_images = []


def interactive(session: ChatSession, stdin: TextIO | None = None) -> None:
    """Read-answer loop until ``exit`` or end of input; ``clear`` starts a new conversation."""
    stdin = stdin or sys.stdin
    out = session.out
    out.write("Chat with the model. Type 'clear' to start over, 'exit' to quit, "
              f"'{IMAGE_COMMAND} PATH' to attach an image to your next message.\n")
    while True:
        out.write("\nUser: ")
        out.flush()
        line = stdin.readline()
        if not line:  # end of input (Ctrl-D or a closed pipe)
            out.write("\n")
            return
        text = line.strip()
        if not text:
            continue
        if text.lower() in EXIT_WORDS:
            return
        if text.lower() in CLEAR_WORDS:
            session.clear()
            out.write("History cleared.\n")
            continue
        if text.split(maxsplit=1)[0] == IMAGE_COMMAND:
            path = text[len(IMAGE_COMMAND):].strip()
            if not path or not Path(path).expanduser().is_file():
                out.write(f"No such image file: {path or '(none given)'}\n")
            else:
                session.attach(path)
                out.write(f"Image attached: {path} (sent with your next message)\n")
            continue
        out.write("Assistant: ")
        try:
            session.ask(text)
        except KeyboardInterrupt:
            out.write("\n[interrupted]\n")


def main(tokens: list[str]) -> int:
    """``tunery chat [config.yaml] [--key value ...] [--query TEXT] [--system TEXT] [--image PATH]``."""
    own, tokens = pop_options(tokens)
    cfg = options.load("chat", tokens, hint='ask one question with --query "..."')
    # the engine imports torch and transformers (seconds); --help must not pay for them
    from tunery.inference import load_engine

    engine = load_engine(cfg)
    session = ChatSession(engine, system=own.get("system"))
    if "image" in own:
        session.attach(own["image"])
    if "query" in own:
        session.ask(own["query"])
        return 0
    interactive(session)
    return 0
