"""One error hierarchy for everything a user can get wrong.

The CLI catches :class:`TuneryError`, prints ``str(err)`` (what, where, what to do) without a
traceback and exits with ``err.exit_code``. Library code raises these instead of bare exceptions
whenever the cause is the user's input, so the message can say how to fix it.
"""

from __future__ import annotations


class TuneryError(Exception):
    """Base class: a problem the user can fix. ``hint`` says what to do next."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message)

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class ConfigError(TuneryError):
    """An unknown key, a wrong type or a value outside what is allowed."""


class DataError(TuneryError):
    """A dataset or example is missing or malformed. Names the file, row and field when known."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        row: int | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.file, self.row, self.field = file, row, field
        where = ", ".join(
            part
            for part in (
                f"file {file}" if file else "",
                f"row {row}" if row is not None else "",
                f"field '{field}'" if field else "",
            )
            if part
        )
        super().__init__(f"{message} ({where})" if where else message, hint=hint)


class ModelError(TuneryError):
    """A model, tokenizer or adapter cannot be found or loaded."""


class ResourceError(TuneryError):
    """Not enough memory, no GPU where one is required, a busy output directory."""


class DependencyError(TuneryError):
    """An optional package is needed for the requested feature but is not installed."""

    def __init__(self, package: str, feature: str, extra: str | None = None) -> None:
        install = f"pip install 'tunery[{extra}]'" if extra else f"pip install {package}"
        super().__init__(
            f"{feature} needs the '{package}' package, which is not installed.", hint=f"run: {install}"
        )


def require(module: str, feature: str, extra: str | None = None, package: str | None = None):
    """Import an optional dependency or raise a DependencyError that says how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise DependencyError(package or module, feature, extra) from exc
