"""The Train tab: settings -> preview of the exact command and YAML -> run with live progress."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr
import yaml

from tunery.errors import TuneryError
from tunery.webui import config_builder
from tunery.webui.datasets_view import dataset_names, preview
from tunery.webui.progress import loss_table, read_progress
from tunery.webui.runner import RunManager
from tunery.webui.ui_state import UI

TRAIN_KEYS = [
    "stage", "finetuning_type", "dataset_dir", "dataset", "learning_rate", "num_train_epochs", "max_steps",
    "per_device_train_batch_size", "gradient_accumulation_steps", "cutoff_len", "max_samples", "logging_steps",
    "save_steps", "lora_rank", "lora_alpha", "lora_dropout", "lora_target", "quantization_bit", "output_dir",
]
MODEL_KEYS = ["model_name_or_path", "adapter_name_or_path", "template"]


def build(ui: UI, manager: RunManager) -> None:
    L = ui.label
    with gr.Row():
        ui.add("stage", gr.Dropdown(["sft", "pt", "rm", "dpo", "kto", "orpo", "simpo", "ppo", "grpo"], value="sft",
                                    label=L("stage"), elem_id="stage"))
        ui.add("finetuning_type", gr.Radio(["lora", "freeze", "full"], value="lora", label=L("finetuning_type"),
                                           elem_id="finetuning_type"))
    with gr.Row():
        ui.add("dataset_dir", gr.Textbox(value="data", label=L("dataset_dir"), elem_id="dataset_dir", scale=1))
        ui.add("dataset", gr.Dropdown(choices=dataset_names("data"), multiselect=True, allow_custom_value=True,
                                      label=L("dataset"), elem_id="dataset", scale=2))
        ui.add("preview_data", gr.Button(L("preview_data"), elem_id="preview_data", scale=0))
    ui.add("data_preview", gr.HTML(label=L("data_preview"), elem_id="data_preview"))
    with gr.Row():
        ui.add("learning_rate", gr.Textbox(value="1e-4", label=L("learning_rate"), elem_id="learning_rate"))
        ui.add("num_train_epochs", gr.Number(value=3, label=L("num_train_epochs"), elem_id="num_train_epochs"))
        ui.add("max_steps", gr.Number(value=-1, precision=0, label=L("max_steps"), elem_id="max_steps"))
        ui.add("per_device_train_batch_size", gr.Number(value=2, precision=0, label=L("per_device_train_batch_size"),
                                                        elem_id="per_device_train_batch_size"))
        ui.add("gradient_accumulation_steps", gr.Number(value=1, precision=0, label=L("gradient_accumulation_steps"),
                                                        elem_id="gradient_accumulation_steps"))
    with gr.Row():
        ui.add("cutoff_len", gr.Number(value=1024, precision=0, label=L("cutoff_len"), elem_id="cutoff_len"))
        ui.add("max_samples", gr.Number(value=1000, precision=0, label=L("max_samples"), elem_id="max_samples"))
        ui.add("logging_steps", gr.Number(value=5, precision=0, label=L("logging_steps"), elem_id="logging_steps"))
        ui.add("save_steps", gr.Number(value=100, precision=0, label=L("save_steps"), elem_id="save_steps"))
    with gr.Accordion("LoRA / QLoRA", open=False):
        with gr.Row():
            ui.add("lora_rank", gr.Number(value=8, precision=0, label=L("lora_rank"), elem_id="lora_rank"))
            ui.add("lora_alpha", gr.Number(value=16, precision=0, label=L("lora_alpha"), elem_id="lora_alpha"))
            ui.add("lora_dropout", gr.Number(value=0.0, label=L("lora_dropout"), elem_id="lora_dropout"))
            ui.add("lora_target", gr.Textbox(value="all", label=L("lora_target"), elem_id="lora_target"))
            ui.add("quantization_bit", gr.Dropdown(["none", "4", "8"], value="none", label=L("quantization_bit"),
                                                   elem_id="quantization_bit"))
    ui.add("output_dir", gr.Textbox(value="saves/webui-run", label=L("output_dir"), elem_id="output_dir"))
    with gr.Row():
        ui.add("preview_cmd", gr.Button(L("preview_cmd"), elem_id="preview_cmd"))
        ui.add("start", gr.Button(L("start"), variant="primary", elem_id="start"))
        ui.add("abort", gr.Button(L("abort"), variant="stop", elem_id="abort"))
    with gr.Row():
        ui.add("settings_path", gr.Textbox(value="saves/webui_settings.yaml", label=L("settings_path"),
                                           elem_id="settings_path", scale=2))
        ui.add("save_settings", gr.Button(L("save_settings"), elem_id="save_settings", scale=0))
        ui.add("load_settings", gr.Button(L("load_settings"), elem_id="load_settings", scale=0))
    with gr.Row():
        ui.add("command_preview", gr.Code(label=L("command_preview"), language="shell", elem_id="command_preview",
                                                    wrap_lines=True))
        ui.add("yaml_preview", gr.Code(label=L("yaml_preview"), language="yaml", elem_id="yaml_preview"))
    ui.add("progress", gr.Slider(0, 100, value=0, interactive=False, label=L("progress"), elem_id="progress"))
    status = gr.Markdown(L("status_idle"), elem_id="train_status")
    with gr.Row():
        ui.add("log", gr.Textbox(lines=12, max_lines=12, label=L("log"), elem_id="train_log", autoscroll=True))
        ui.add("loss_plot", gr.LinePlot(x="step", y="loss", color="series", label=L("loss_plot"), elem_id="loss_plot"))

    inputs = [ui[k] for k in MODEL_KEYS + TRAIN_KEYS]

    def values_of(*args: Any) -> dict[str, Any]:
        return dict(zip(MODEL_KEYS + TRAIN_KEYS, args))

    def do_preview(*args: Any):
        try:
            config = config_builder.train_config(values_of(*args))
        except TuneryError as err:
            return "", "", f"**{err}**"
        return config_builder.command_line("train", config), config_builder.to_yaml(config), ui.label("status_idle")

    def do_start(*args: Any):
        try:
            config = config_builder.train_config(values_of(*args))
            manager.start("train", config, config["output_dir"])
        except TuneryError as err:
            return f"**{err}**", config_builder.command_line("train", {}), ""
        return (f"{ui.label('status_running')}: `{config['output_dir']}`",
                config_builder.command_line("train", config), config_builder.to_yaml(config))

    def do_abort(output_dir: str):
        run = manager.abort(output_dir)
        return ui.label("status_aborted") if run else ui.label("status_idle")

    def tick(output_dir: str):
        run = manager.get(output_dir)
        if run is None:
            return gr.update(), gr.update(), gr.update(), gr.update()
        progress = read_progress(run.output_dir)
        if run.running:
            state = f"{ui.label('status_running')}: {progress.label}"
        elif run.aborted:
            state = ui.label("status_aborted")
        elif run.returncode == 0:
            state = ui.label("status_done")
            progress.percentage = 100.0
        else:
            state = ui.label("status_failed")
        return progress.percentage, state, run.log_tail(), loss_table(progress)

    def refresh_datasets(dataset_dir: str):
        return gr.update(choices=dataset_names(dataset_dir))

    def do_data_preview(*args: Any):
        values = values_of(*args)
        config = config_builder.clean({k: values[k] for k in ("model_name_or_path", "template", "dataset_dir", "dataset")})
        try:
            return preview(config)
        except TuneryError as err:
            return f"<p><b>{err}</b></p>"

    def save_settings(path: str, *args: Any):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(config_builder.to_yaml(config_builder.clean(values_of(*args))), encoding="utf-8")
        return f"saved to `{path}`"

    def load_settings(path: str):
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except OSError as err:
            return [gr.update()] * len(inputs) + [f"**{err}**"]
        updates = []
        for key in MODEL_KEYS + TRAIN_KEYS:
            value = data.get(key)
            if key == "dataset" and isinstance(value, str):
                value = [v.strip() for v in value.split(",")]
            updates.append(gr.update(value=value) if value is not None else gr.update())
        return updates + [f"loaded `{path}`"]

    ui["preview_cmd"].click(do_preview, inputs, [ui["command_preview"], ui["yaml_preview"], status])
    ui["start"].click(do_start, inputs, [status, ui["command_preview"], ui["yaml_preview"]])
    ui["abort"].click(do_abort, [ui["output_dir"]], [status])
    ui["dataset_dir"].change(refresh_datasets, [ui["dataset_dir"]], [ui["dataset"]])
    ui["preview_data"].click(do_data_preview, inputs, [ui["data_preview"]])
    ui["save_settings"].click(save_settings, [ui["settings_path"], *inputs], [status])
    ui["load_settings"].click(load_settings, [ui["settings_path"]], [*inputs, status])
    timer = gr.Timer(1.0)
    timer.tick(tick, [ui["output_dir"]], [ui["progress"], status, ui["log"], ui["loss_plot"]])
