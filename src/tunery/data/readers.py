"""Read local dataset files row by row, in constant memory, with one clear error per unreadable file.

JSON lines are read a line at a time; a top-level JSON array is parsed incrementally with ``ijson``
(neither the json module nor ``datasets``' json builder can read an array without holding all of
it). Every byte is checked as UTF-8 as it passes, so a file in another encoding is an error naming
the line and byte offset instead of an ``UnicodeDecodeError`` from deep inside a library. A UTF-8
byte-order mark is accepted silently (as ``datasets`` and LLaMA-Factory do); a UTF-16/32 one is named.

A row that is not valid JSON in a JSON-lines file is yielded as ``{"__invalid__": reason}`` so the
loader skips and reports it; a broken JSON array cannot be resynchronised, so it is an error naming
the row where it broke.
"""

from __future__ import annotations

import codecs
import json
import os
from collections.abc import Iterator
from typing import IO, Any

import ijson

from tunery.errors import DataError

CHUNK = 1 << 16
EXACT_POSITION_LIMIT = 64 << 20  # a broken array smaller than this is re-read to name its line and column
OTHER_BOMS = {codecs.BOM_UTF32_LE: "UTF-32", codecs.BOM_UTF32_BE: "UTF-32",
              codecs.BOM_UTF16_LE: "UTF-16", codecs.BOM_UTF16_BE: "UTF-16"}
INVALID = "__invalid__"


def open_binary(path: str) -> IO[bytes]:
    """Open ``path`` for reading; a missing, unreadable or non-file path is a DataError naming it."""
    try:
        return open(path, "rb")
    except PermissionError as exc:
        raise DataError("permission denied: the file cannot be read", file=path,
                        hint="give the user running tunery read access (chmod +r)") from exc
    except IsADirectoryError as exc:
        raise DataError("expected a file, found a folder", file=path) from exc
    except OSError as exc:
        raise DataError(f"cannot open the file: {exc.strerror or exc}", file=path) from exc


def _encoding_error(path: str, offset: int, line: int, bad: bytes) -> DataError:
    return DataError(
        f"the file is not UTF-8: byte 0x{bad[:1].hex()} at byte offset {offset} (line {line}) cannot be decoded",
        file=path, hint="convert the file to UTF-8, e.g. iconv -f <its encoding> -t utf-8 in > out")


def _check_start(path: str, head: bytes) -> int:
    """Bytes to skip at the start: a UTF-8 BOM is skipped; a UTF-16/32 BOM is an error."""
    for bom, name in OTHER_BOMS.items():
        if head.startswith(bom):
            raise DataError(f"the file is {name} (it starts with a {name} byte-order mark); Tunery reads UTF-8",
                            file=path, hint=f"convert it: iconv -f {name} -t UTF-8 in > out")
    return len(codecs.BOM_UTF8) if head.startswith(codecs.BOM_UTF8) else 0


class Utf8Checked:
    """A binary file wrapper that checks UTF-8 as bytes are read and knows the line it is on."""

    def __init__(self, f: IO[bytes], path: str, skip: int = 0) -> None:
        self.f, self.path = f, path
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.offset, self.line = skip, 1
        f.seek(skip)

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        pending = len(self.decoder.getstate()[0])
        try:
            self.decoder.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            start = max(exc.start - pending, 0)
            raise _encoding_error(self.path, self.offset + start, self.line + data[:start].count(b"\n"),
                                  (self.decoder.getstate()[0] + data)[exc.start:]) from None
        self.offset += len(data)
        self.line += data.count(b"\n")
        return data


def check_utf8(path: str) -> None:
    """Read ``path`` once in chunks: a DataError naming line and byte offset when it is not UTF-8."""
    with open_binary(path) as f:
        reader = Utf8Checked(f, path, _check_start(path, f.read(4)))
        while reader.read(CHUNK):
            pass


def count_lines(path: str, most: int) -> int:
    """Non-empty lines of ``path``, counted up to ``most`` (reads no further)."""
    count = 0
    with open_binary(path) as f:
        for line in f:
            count += bool(line.strip())
            if count >= most:
                break
    return count


def _first_char(f: IO[bytes], skip: int) -> bytes:
    f.seek(skip)
    while True:
        chunk = f.read(CHUNK)
        if not chunk:
            return b""
        stripped = chunk.lstrip()
        if stripped:
            return stripped[:1]


def read_json_rows(path: str) -> Iterator[Any]:
    """Rows of a .json file (an array, one or more objects, or JSON lines despite the name) or .jsonl file.

    Constant memory. Raises DataError for an empty, unreadable, non-UTF-8 or broken-array file.
    """
    jsonl = path.lower().endswith(".jsonl")
    with open_binary(path) as f:
        skip = _check_start(path, f.read(4))
        first = _first_char(f, skip)
        if not first:
            raise DataError("the file is empty", file=path, hint="put one example per line (jsonl) or a JSON array")
        if first == b"[" and not jsonl:
            yield from _array_rows(f, path, skip)
            return
        if first == b"{" and not jsonl and not _first_line_is_json(f, path, skip):
            yield from _object_rows(f, path, skip)  # one (pretty-printed) object, or several in a row
            return
        yield from _line_rows(f, path, skip)


def _first_line_is_json(f: IO[bytes], path: str, skip: int) -> bool:
    f.seek(skip)
    while True:
        line = f.readline()
        if not line:
            return False
        if line.strip():
            break
    try:
        json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    return True


def _line_rows(f: IO[bytes], path: str, skip: int) -> Iterator[Any]:
    f.seek(skip)
    offset = skip
    for lineno, raw in enumerate(f, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _encoding_error(path, offset + exc.start, lineno, raw[exc.start:]) from None
        offset += len(raw)
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as exc:
            yield {INVALID: f"line {lineno} is not valid JSON ({exc.msg}, column {exc.colno})"}
        except RecursionError:
            yield {INVALID: f"line {lineno} is nested too deeply to read"}


def _array_rows(f: IO[bytes], path: str, skip: int) -> Iterator[Any]:
    reader = Utf8Checked(f, path, skip)
    row = 0
    try:
        for item in ijson.items(reader, "item", use_float=True):
            yield item
            row += 1
    except ijson.JSONError as exc:
        raise _broken(path, f"the JSON array breaks at row {row} (counting from 0)", exc) from None


def _object_rows(f: IO[bytes], path: str, skip: int) -> Iterator[Any]:
    reader = Utf8Checked(f, path, skip)
    row = 0
    try:
        for item in ijson.items(reader, "", multiple_values=True, use_float=True):
            yield item
            row += 1
    except ijson.JSONError as exc:
        raise _broken(path, f"the JSON breaks in object {row} (counting from 0)", exc) from None


def _broken(path: str, what: str, exc: Exception) -> DataError:
    """The error for broken JSON; small files are re-read with the json module for the exact line."""
    where = ""
    if os.path.getsize(path) <= EXACT_POSITION_LIMIT:
        try:
            with open(path, encoding="utf-8-sig") as f:
                json.loads(f.read())
        except json.JSONDecodeError as jexc:
            where = f": {jexc.msg} (line {jexc.lineno}, column {jexc.colno})"
        except (UnicodeDecodeError, RecursionError, ValueError):
            pass
    if not where:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        where = f": {detail.strip()}"
    hint = "the file looks cut short (was it fully written or downloaded?)" if "premature EOF" in str(exc) \
        else "fix the JSON at that place"
    return DataError(f"invalid JSON: {what}{where}", file=path, row=None, hint=hint)
