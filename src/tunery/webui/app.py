"""The Gradio app (Train, Evaluate & Predict, Chat, Export), English or Chinese.

``tunery webui`` (``cli/webui.py``) calls :func:`launch`. Binds 127.0.0.1:7860 unless --host/--port or GRADIO_SERVER_NAME / GRADIO_SERVER_PORT say otherwise;
GRADIO_SHARE=1 asks Gradio for a public link. ``--auth user:pass`` (or TUNERY_WEBUI_AUTH) turns on
Gradio's login; binding beyond loopback without it prints a warning. Files are read and written only
inside the folder it was started in (see webui.paths).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from tunery.data.template import list_templates
from tunery.errors import ConfigError, require
from tunery.webui.locales import LANGUAGES, t
from tunery.webui.paths import Workspace
from tunery.webui.runs import MODEL_ALIAS, adapter_choices, model_choices, model_template, run_folders

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
AUTH_ENV = "TUNERY_WEBUI_AUTH"
# Runs in the browser on page load: Chinese when the browser asks for it, else the page's current language.
_BROWSER_LANG_JS = """(current) => {
  const asked = (navigator.languages && navigator.languages.length ? navigator.languages[0] : navigator.language) || "";
  return asked.toLowerCase().startsWith("zh") ? "zh" : current;
}"""


def default_lang(env: dict[str, str] | None = None) -> str:
    """``zh`` when the locale (LANGUAGE, LC_ALL, LC_MESSAGES or LANG, first one set) is Chinese, else ``en``."""
    env = os.environ if env is None else env
    for key in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        if env.get(key):
            return "zh" if env[key].lower().startswith("zh") else "en"
    return "en"


def build_app(lang: str = "en", follow_browser: bool = True, workspace: Workspace | None = None):
    """The Blocks app in ``lang``; with ``follow_browser`` the page switches to Chinese when the browser asks.

    ``workspace`` (default: the current folder) bounds every path the UI reads or writes.
    """
    gr = require("gradio", "the web UI", "webui")
    # lazy: the tabs import gradio (an optional extra); require() above turns its absence into a clear error
    from tunery.webui import tab_chat, tab_jobs, tab_train
    from tunery.webui.chat_session import ChatSession
    from tunery.webui.runner import RunManager
    from tunery.webui.ui_state import UI, relabel_updates

    workspace = workspace or Workspace()
    ui = UI(lang=lang, workspace=workspace)
    manager = RunManager(workspace)
    session = ChatSession()
    with gr.Blocks(title="Tunery") as app:
        title = gr.Markdown(f"## {t('title', lang)}", elem_id="title")
        with gr.Row():
            lang_box = gr.Dropdown(list(LANGUAGES), value=lang, label=t("lang", lang), elem_id="lang", scale=0)
            ui.add("model_name_or_path", gr.Dropdown(
                choices=model_choices(workspace.root), value=MODEL_ALIAS, allow_custom_value=True,
                label=ui.label("model_name_or_path"), elem_id="model_name_or_path", scale=2))
            ui.add("adapter_name_or_path", gr.Dropdown(
                choices=["", *adapter_choices(run_folders(workspace.save_root), workspace.root)], value="",
                allow_custom_value=True, label=ui.label("adapter_name_or_path"), elem_id="adapter_name_or_path",
                scale=2))
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

        def refresh_adapters(output_dir: str):
            extra = ()
            try:
                extra = (workspace.resolve(output_dir, "output folder"),)
            except ConfigError:
                pass
            return gr.update(choices=["", *adapter_choices(run_folders(workspace.save_root, extra), workspace.root)])

        def preset_template(model: str):
            suggested = model_template(model, workspace.root)
            return gr.update() if suggested is None else gr.update(value=suggested)

        # the pickers list the save root's runs, checkpoints and models afresh each time they are opened
        ui["adapter_name_or_path"].focus(refresh_adapters, [ui["output_dir"]], [ui["adapter_name_or_path"]])
        ui["model_name_or_path"].focus(lambda: gr.update(choices=model_choices(workspace.root)), None,
                                       [ui["model_name_or_path"]])
        # a model the user picks or types presets the template (`input`, not `change`: loading saved settings
        # sets model and template together and must keep the saved template)
        ui["model_name_or_path"].input(preset_template, [ui["model_name_or_path"]], [ui["template"]])
        if follow_browser:
            app.load(None, [lang_box], [lang_box], js=_BROWSER_LANG_JS)
    return app


def _template_choices() -> list[str]:
    return list_templates()  # "auto" first, then the builtins


def parse_auth(text: str | None) -> tuple[str, str] | None:
    """``"user:pass"`` -> ``("user", "pass")`` (the password may contain ``:``); empty -> None."""
    if not text:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise ConfigError("web UI login must look like user:password", hint=f"--auth user:pass or {AUTH_ENV}=user:pass")
    return user, password


def exposure_warning(host: str, auth: Any, share: bool = False) -> str | None:
    """The warning to print when the UI is reachable by others without a login, else None."""
    if auth:
        return None
    if share:
        return ("WARNING: GRADIO_SHARE gives the web UI a public link and no login is set: anyone with the link "
                "can start runs and read datasets. Add --auth user:pass (or TUNERY_WEBUI_AUTH).")
    if host not in LOOPBACK_HOSTS and not host.startswith("127."):
        return (f"WARNING: the web UI listens on {host} without a login: anyone who can reach this port can start "
                "runs and read datasets in this folder. Add --auth user:pass (or TUNERY_WEBUI_AUTH), "
                "or bind 127.0.0.1.")
    return None


def launch(host: str | None = None, port: int | None = None, auth: str | None = None, lang: str | None = None,
           share: bool | None = None) -> int:
    """Build and serve the app (blocks until stopped).

    host/port default to GRADIO_SERVER_NAME/GRADIO_SERVER_PORT, then 127.0.0.1:7860; auth (``user:pass``)
    to TUNERY_WEBUI_AUTH; lang to the locale, with the browser's language followed when lang is None.
    Raises ConfigError for a malformed auth.
    """
    host = host or os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1"
    port = port or int(os.environ.get("GRADIO_SERVER_PORT") or 7860)
    credentials = parse_auth(auth if auth is not None else os.environ.get(AUTH_ENV))
    if share is None:
        share = os.environ.get("GRADIO_SHARE", "").lower() in ("1", "true", "yes")
    warning = exposure_warning(host, credentials, share)
    if warning:
        print(warning, file=sys.stderr)
    app = build_app(lang or default_lang(), follow_browser=lang is None)
    app.queue(default_concurrency_limit=4).launch(
        server_name=host, server_port=port, share=share, auth=credentials, footer_links=[],
    )
    return 0
