"""The Gradio app (Train, Evaluate & Predict, Chat, Export), English or Chinese.

``tunery webui`` (``cli/webui.py``) builds it with :func:`build_app` and launches it.
"""

from __future__ import annotations

from tunery.data.template import list_templates
from tunery.errors import require
from tunery.webui.locales import LANGUAGES, t


def build_app(lang: str = "en"):
    gr = require("gradio", "the web UI", "webui")
    # lazy: the tabs import gradio (an optional extra); require() above turns its absence into a clear error
    from tunery.webui import tab_chat, tab_jobs, tab_train
    from tunery.webui.chat_session import ChatSession
    from tunery.webui.runner import RunManager
    from tunery.webui.ui_state import UI, relabel_updates

    ui = UI(lang=lang)
    manager = RunManager()
    session = ChatSession()
    with gr.Blocks(title="Tunery") as app:
        title = gr.Markdown(f"## {t('title', lang)}", elem_id="title")
        with gr.Row():
            lang_box = gr.Dropdown(list(LANGUAGES), value=lang, label=t("lang", lang), elem_id="lang", scale=0)
            ui.add("model_name_or_path", gr.Textbox(value="smollm2-135m-instruct", label=ui.label("model_name_or_path"),
                                                    elem_id="model_name_or_path", scale=2))
            ui.add("adapter_name_or_path", gr.Textbox(label=ui.label("adapter_name_or_path"),
                                                      elem_id="adapter_name_or_path", scale=2))
            ui.add("template", gr.Dropdown(_template_choices(), value="auto", allow_custom_value=True,
                                           label=ui.label("template"), elem_id="template", scale=1))
        with gr.Tabs():
            with ui.add("tab_train", gr.Tab(ui.label("tab_train"), elem_id="tab_train")):
                tab_train.build(ui, manager)
            with ui.add("tab_eval", gr.Tab(ui.label("tab_eval"), elem_id="tab_eval")):
                tab_jobs.build_eval(ui, manager)
            with ui.add("tab_chat", gr.Tab(ui.label("tab_chat"), elem_id="tab_chat")):
                tab_chat.build(ui, session)
            with ui.add("tab_export", gr.Tab(ui.label("tab_export"), elem_id="tab_export")):
                tab_jobs.build_export(ui, manager)

        def switch(new_lang: str):
            return [gr.update(value=f"## {t('title', new_lang)}"), gr.update(label=t("lang", new_lang))] + \
                relabel_updates(ui, new_lang)

        lang_box.change(switch, [lang_box], [title, lang_box, *ui.components.values()])
    return app


def _template_choices() -> list[str]:
    return list_templates()  # "auto" first, then the builtins

