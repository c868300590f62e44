"""Method settings in nested groups, with LLaMA-Factory's flat names still working.

A settings class (``FinetuningArguments``, ``ModelArguments``) may hold typed sub-groups, e.g.
``cfg.finetuning.lora.lora_rank``. :func:`flat_groups` makes the flat spelling keep working in the
three places it appears:

- YAML/CLI keys (``lora_rank: 16``, ``--lora_rank 16``): the parser routes each flat key to its group
  (see :func:`settings_of`);
- constructor keywords (``FinetuningArguments(lora_rank=16)``), used by tests and hand-built configs;
- attribute reads and writes (``cfg.finetuning.lora_rank``): a property per flat name that reads or
  writes the group's field. This is the compatibility layer while readers move to the group spelling.

Groups are dataclasses named in field metadata ``{"group": True}``; the flat names of all groups of one
class must be distinct from each other and from the class's own fields.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from collections.abc import Iterator
from typing import Any


def group_field(cls: type, help_text: str) -> Any:
    """A dataclass field holding the settings group ``cls`` (fresh instance per object)."""
    return dataclasses.field(default_factory=cls, metadata={"group": True, "help": help_text})


def group_fields(cls: type) -> dict[str, type]:
    """``{group attribute: group class}`` of a settings class, in declaration order."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.metadata.get("group")}


def settings_of(cls: type) -> Iterator[tuple[str | None, dataclasses.Field, Any]]:
    """Every user-facing setting of ``cls`` as ``(group or None, field, resolved type)``.

    The class's own fields first, then each group's fields; the group attributes themselves are not settings.
    """
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # transformers' dataclasses use forward refs we may not resolve
        hints = {}
    fields = [f for f in dataclasses.fields(cls) if f.init]
    for f in fields:
        if not f.metadata.get("group"):
            yield None, f, hints.get(f.name, f.type)
    for f in fields:
        if f.metadata.get("group"):
            sub_cls = hints[f.name]
            sub_hints = typing.get_type_hints(sub_cls)
            for sub in dataclasses.fields(sub_cls):
                if sub.init:
                    yield f.name, sub, sub_hints.get(sub.name, sub.type)


def flat_groups(cls: type) -> type:
    """Class decorator (after ``@dataclass``): flat keywords and flat properties for the groups' fields."""
    groups = group_fields(cls)
    flat: dict[str, str] = {}
    own = {f.name for f in dataclasses.fields(cls)}
    for group_name, group_cls in groups.items():
        for sub in dataclasses.fields(group_cls):
            if sub.name in flat or sub.name in own:
                raise TypeError(f"{cls.__name__}: setting '{sub.name}' is defined twice")
            flat[sub.name] = group_name
    generated_init = cls.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        per_group: dict[str, dict[str, Any]] = {}
        for key in [k for k in kwargs if k in flat]:
            per_group.setdefault(flat[key], {})[key] = kwargs.pop(key)
        for group_name, group_cls in groups.items():
            base, values = kwargs.get(group_name), per_group.get(group_name, {})
            if base is not None:  # groups are values: dataclasses.replace must not share them
                kwargs[group_name] = dataclasses.replace(base, **values)
            elif values:
                kwargs[group_name] = group_cls(**values)
        generated_init(self, *args, **kwargs)

    def __copy__(self: Any) -> Any:
        # A copy owns its groups: writing copy.lora_rank must not change the original.
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        for group_name in groups:
            setattr(new, group_name, copy.copy(getattr(self, group_name)))
        return new

    def make_property(name: str, group_name: str) -> property:
        def get(self: Any) -> Any:
            return getattr(getattr(self, group_name), name)

        def set_(self: Any, value: Any) -> None:
            setattr(getattr(self, group_name), name, value)

        return property(get, set_, doc=f"Same as .{group_name}.{name} (flat LLaMA-Factory name).")

    __init__.__doc__ = generated_init.__doc__
    cls.__init__ = __init__  # type: ignore[method-assign]
    cls.__copy__ = __copy__  # type: ignore[attr-defined]
    for name, group_name in flat.items():
        setattr(cls, name, make_property(name, group_name))
    cls.FLAT_SETTINGS = dict(flat)  # type: ignore[attr-defined]
    return cls


def setting_value(obj: Any, group: str | None, name: str) -> Any:
    """The value of one setting of a settings object (``group`` as yielded by :func:`settings_of`)."""
    return getattr(getattr(obj, group) if group else obj, name)
