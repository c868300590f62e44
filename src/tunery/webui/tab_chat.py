"""The Chat tab: load base + adapter in this process, multi-turn streamed chat."""

from __future__ import annotations

from typing import Any

import gradio as gr

from tunery.errors import TuneryError
from tunery.webui import config_builder
from tunery.webui.chat_session import ChatSession
from tunery.webui.ui_state import UI


def build(ui: UI, session: ChatSession) -> None:
    L = ui.label
    with gr.Row():
        ui.add("load_model", gr.Button(L("load_model"), variant="primary", elem_id="load_model"))
        ui.add("unload_model", gr.Button(L("unload_model"), elem_id="unload_model"))
        ui.add("model_status", gr.Textbox(value=L("model_not_loaded"), label=L("model_status"), elem_id="model_status",
                                          interactive=False))
    ui.add("system", gr.Textbox(label=L("system"), elem_id="system"))
    with gr.Row():
        ui.add("chat_max_new_tokens", gr.Slider(8, 2048, value=256, step=8, label=L("max_new_tokens"),
                                                elem_id="chat_max_new_tokens"))
        ui.add("temperature", gr.Slider(0.0, 1.5, value=0.7, step=0.05, label=L("temperature"), elem_id="temperature"))
        ui.add("top_p", gr.Slider(0.05, 1.0, value=0.9, step=0.05, label=L("top_p"), elem_id="top_p"))
    ui.add("chatbot", gr.Chatbot(label=L("chatbot"), elem_id="chatbot", height=360))
    with gr.Row():
        ui.add("chat_image", gr.Image(label=L("chat_image"), type="filepath", elem_id="chat_image", height=120,
                                      sources=["upload"], scale=1))
        ui.add("message", gr.Textbox(label=L("message"), elem_id="message", scale=4))
        ui.add("send", gr.Button(L("send"), variant="primary", elem_id="send", scale=0))
        ui.add("clear", gr.Button(L("clear"), elem_id="clear", scale=0))

    def load(model: str, adapter: str, template: str) -> str:
        try:
            session.load(config_builder.clean({"model_name_or_path": model, "adapter_name_or_path": adapter,
                                               "template": template}))
        except TuneryError as err:
            return str(err)
        return ui.label("model_loaded")

    def unload() -> str:
        session.unload()
        return ui.label("model_not_loaded")

    def user_turn(message: str, image: str | None, history: list[dict[str, Any]] | None):
        turn = [{"role": "user", "content": {"path": image}}] if image else []  # shown, then sent with the text
        return "", None, (history or []) + turn + [{"role": "user", "content": message}]

    def bot_turn(history: list[dict[str, Any]], system: str, max_new_tokens: float, temperature: float, top_p: float):
        if not session.loaded:
            yield history + [{"role": "assistant", "content": ui.label("model_not_loaded")}]
            return
        gen = {"max_new_tokens": int(max_new_tokens), "temperature": temperature, "top_p": top_p,
               "do_sample": temperature > 0}
        try:
            for partial in session.stream(history, system, **gen):
                yield history + [{"role": "assistant", "content": partial}]
        except TuneryError as err:  # an image for a text model, an unreadable image: one line in the chat
            yield history + [{"role": "assistant", "content": str(err)}]

    ui["load_model"].click(load, [ui["model_name_or_path"], ui["adapter_name_or_path"], ui["template"]],
                           [ui["model_status"]])
    ui["unload_model"].click(unload, None, [ui["model_status"]])
    gen_inputs = [ui["chatbot"], ui["system"], ui["chat_max_new_tokens"], ui["temperature"], ui["top_p"]]
    for trigger in (ui["send"].click, ui["message"].submit):
        trigger(user_turn, [ui["message"], ui["chat_image"], ui["chatbot"]],
                [ui["message"], ui["chat_image"], ui["chatbot"]]).then(
            bot_turn, gen_inputs, [ui["chatbot"]]
        )
    ui["clear"].click(lambda: [], None, [ui["chatbot"]])
