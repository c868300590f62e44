"""Shared pieces of the Blocks: the label registry used for language switching."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tunery.webui.locales import t
from tunery.webui.paths import Workspace


@dataclass
class UI:
    """Components by key, so callbacks and the language switch can address them."""

    lang: str = "en"
    workspace: Workspace = field(default_factory=Workspace)  # where the UI may read and write
    components: dict[str, Any] = field(default_factory=dict)

    def add(self, key: str, component: Any) -> Any:
        self.components[key] = component
        return component

    def label(self, key: str) -> str:
        return t(key, self.lang)

    def __getitem__(self, key: str) -> Any:
        return self.components[key]


def relabel_updates(ui: UI, lang: str) -> list[Any]:
    """gr.update(label=...) (or value= for buttons/markdown titles) for every registered component."""
    import gradio as gr

    updates = []
    for key, comp in ui.components.items():
        text = t(key, lang)
        if isinstance(comp, gr.Button):
            updates.append(gr.update(value=text))
        elif isinstance(comp, gr.Tab):
            updates.append(gr.update(label=text))
        else:
            updates.append(gr.update(label=text))
    return updates
