"""``tunery chat``: the terminal chat (REPL) with streamed replies, or one answer with --query.

``--query``, ``--system``, ``--image``, ``--video`` and ``--audio`` are options of this command, not
settings, so they are taken out of the tokens before the config parser (which rejects unknown keys)
sees them. ``--image PATH`` (or ``/image PATH`` in the REPL) attaches an image to the next message,
``--video PATH`` / ``/video PATH`` a video (a file, or a folder of frame images) and ``--audio PATH`` /
``/audio PATH`` an audio file, for a multimodal model that takes that kind.
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
OPTIONS = ("query", "system", "image", "video", "audio")
IMAGE_COMMAND = "/image"
# option / REPL command -> the message key the engine reads
MEDIA = {"image": "images", "video": "videos", "audio": "audios"}


def pop_options(tokens: list[str]) -> tuple[dict[str, str], list[str]]:
    """Take ``--query TEXT`` / ``--system TEXT`` / ``--image``/``--video``/``--audio PATH`` (or ``--query=TEXT``)
    out of ``tokens``."""
    return options.pop_flags(tokens, {name: True for name in OPTIONS})


class ChatSession:
    """The conversation so far; each answer is streamed to ``out`` and then kept in the history."""

    def __init__(self, engine: Engine, system: str | None = None, out: TextIO | None = None) -> None:
        self.engine = engine
        self.system = system
        self.out = out or sys.stdout
        self.history: list[dict] = []
        self.pending: dict[str, list[str]] = {key: [] for key in MEDIA.values()}  # sent with the next message

    @property
    def pending_images(self) -> list[str]:
        return self.pending["images"]

    def attach(self, path: str, kind: str = "images") -> None:
        """Attach a media file (``kind``: images, videos or audios) to the next message; a relative path is
        read from the working folder. A video may be a folder of frame images."""
        self.pending[kind].append(str(Path(path).expanduser().resolve()))

    def ask(self, text: str) -> str:
        message: dict = {"role": "user", "content": text}
        message.update({kind: items for kind, items in self.pending.items() if items})
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
            self.pending = {key: [] for key in MEDIA.values()}
        finally:
            if stream is not None:
                stream.close()  # on Ctrl-C this stops the generation thread at once
        self.out.write("\n")
        self.history.append({"role": "assistant", "content": reply})
        return reply

    def clear(self) -> None:
        self.history.clear()
        self.pending = {key: [] for key in MEDIA.values()}


def interactive(session: ChatSession, stdin: TextIO | None = None) -> None:
    """Read-answer loop until ``exit`` or end of input; ``clear`` starts a new conversation."""
    stdin = stdin or sys.stdin
    out = session.out
    out.write("Chat with the model. Type 'clear' to start over, 'exit' to quit, "
              f"'{IMAGE_COMMAND} PATH' (or /video PATH, /audio PATH) to attach media to your next message.\n")
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
        command = text.split(maxsplit=1)[0]
        if command.startswith("/") and command[1:] in MEDIA:
            what, path = command[1:], text[len(command):].strip()
            target = Path(path).expanduser()
            if not path or not (target.is_file() or (what == "video" and target.is_dir())):
                out.write(f"No such {what} file: {path or '(none given)'}\n")
            else:
                session.attach(path, MEDIA[what])
                out.write(f"{what.capitalize()} attached: {path} (sent with your next message)\n")
            continue
        out.write("Assistant: ")
        try:
            session.ask(text)
        except KeyboardInterrupt:
            out.write("\n[interrupted]\n")


def main(tokens: list[str]) -> int:
    """``tunery chat [config.yaml] [--key value ...] [--query TEXT] [--system TEXT] [--image PATH]
    [--video PATH] [--audio PATH]``."""
    own, tokens = pop_options(tokens)
    cfg = options.load("chat", tokens, hint='ask one question with --query "..."')
    # the engine imports torch and transformers (seconds); --help must not pay for them
    from tunery.inference import check_media_kinds, load_engine

    check_media_kinds(cfg, [option for option in MEDIA if option in own])  # before minutes of loading
    engine = load_engine(cfg)
    session = ChatSession(engine, system=own.get("system"))
    for option, kind in MEDIA.items():
        if option in own:
            session.attach(own[option], kind)
    if "query" in own:
        session.ask(own["query"])
        return 0
    interactive(session)
    return 0
