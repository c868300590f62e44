"""The Train tab: settings -> preview of the exact command and YAML -> run with live progress."""

from __future__ import annotations

from typing import Any

import gradio as gr
import yaml

from tunery.errors import TuneryError
from tunery.webui import config_builder, settings_form
from tunery.webui.datasets_view import dataset_names, preview
from tunery.webui.paths import demo_data_dir
from tunery.webui.progress import Progress, loss_table, progress_html, read_progress
from tunery.webui.runner import RunManager
from tunery.webui.runs import run_folders, run_info, runs_table
from tunery.webui.ui_state import UI

TRAIN_KEYS = [
    "stage", "finetuning_type", "dataset_dir", "dataset", "learning_rate", "num_train_epochs", "max_steps",
    "per_device_train_batch_size", "gradient_accumulation_steps", "cutoff_len", "max_samples", "logging_steps",
    "save_steps", "lora_rank", "lora_alpha", "lora_dropout", "lora_target", "quantization_bit", "output_dir",
]
MODEL_KEYS = ["model_name_or_path", "adapter_name_or_path", "template"]


def build(ui: UI, manager: RunManager) -> None:
    L = ui.label
    ws = ui.workspace
    data_dir, is_demo = ws.default_dataset_dir()
    with gr.Row():
        ui.add("stage", gr.Dropdown(["sft", "pt", "rm", "dpo", "kto", "orpo", "simpo", "ppo", "grpo"], value="sft",
                                    label=L("stage"), elem_id="stage"))
        ui.add("finetuning_type", gr.Radio(["lora", "oft", "freeze", "full"], value="lora", label=L("finetuning_type"),
                                           elem_id="finetuning_type"))
    with gr.Row():
        ui.add("dataset_dir", gr.Textbox(value=data_dir, label=L("dataset_dir"), elem_id="dataset_dir", scale=1))
        ui.add("dataset", gr.Dropdown(choices=dataset_names(data_dir), multiselect=True, allow_custom_value=True,
                                      label=L("dataset"), elem_id="dataset", scale=2))
        ui.add("preview_data", gr.Button(L("preview_data"), elem_id="preview_data", scale=0))
    dataset_hint = gr.Markdown(L("dataset_dir_demo_hint"), visible=is_demo, elem_id="dataset_hint")
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
    # every other setting `tunery train` reads, generated from the config groups (folded sections)
    advanced_settings = settings_form.train_settings(shown=MODEL_KEYS + TRAIN_KEYS)
    advanced = settings_form.build(shown=MODEL_KEYS + TRAIN_KEYS)
    ui.add("output_dir", gr.Textbox(value="saves/webui-run", label=L("output_dir"), elem_id="output_dir"))
    with gr.Row():
        ui.add("preview_cmd", gr.Button(L("preview_cmd"), elem_id="preview_cmd"))
        ui.add("start", gr.Button(L("start"), variant="primary", elem_id="start"))
        ui.add("abort", gr.Button(L("abort"), variant="stop", elem_id="abort"))
    with gr.Row():
        ui.add("settings_name", gr.Dropdown(choices=ws.settings_names(), value="webui", allow_custom_value=True,
                                            label=L("settings_name"), info=str(ws.settings_dir),
                                            elem_id="settings_name", scale=2))
        ui.add("save_settings", gr.Button(L("save_settings"), elem_id="save_settings", scale=0))
        ui.add("load_settings", gr.Button(L("load_settings"), elem_id="load_settings", scale=0))
    with gr.Row():
        # no wrap_lines: Gradio sizes a wrapped Code block far too tall (~1,500 px of blank page after Start);
        # max_lines bounds both blocks, long lines scroll sideways
        ui.add("command_preview", gr.Code(label=L("command_preview"), language="shell", elem_id="command_preview",
                                          lines=4, max_lines=14))
        ui.add("yaml_preview", gr.Code(label=L("yaml_preview"), language="yaml", elem_id="yaml_preview",
                                       lines=4, max_lines=14))
    status = gr.Markdown(L("status_idle"), elem_id="train_status")
    ui.add("progress", gr.HTML(progress_html(0.0), elem_id="progress", js_on_load=None))
    with gr.Row():
        ui.add("log", gr.Textbox(lines=12, max_lines=12, label=L("log"), elem_id="train_log", autoscroll=True))
        ui.add("loss_plot", gr.LinePlot(x="step", y="loss", color="series", label=L("loss_plot"), elem_id="loss_plot"))
    with ui.add("past_runs", gr.Accordion(L("past_runs"), open=False, elem_id="past_runs")):
        with gr.Row():
            ui.add("run_pick", gr.Dropdown(choices=[], label=L("run_pick"), elem_id="run_pick", scale=3))
            ui.add("refresh_runs", gr.Button(L("refresh_runs"), elem_id="refresh_runs", scale=0))
        with gr.Row():
            ui.add("runs_table", gr.Dataframe(headers=["folder", "status", "steps", "last loss"], interactive=False,
                                              label=L("runs_table"), elem_id="runs_table", max_height=320))
            ui.add("run_plot", gr.LinePlot(x="step", y="loss", color="series", label=L("loss_plot"),
                                           elem_id="run_plot"))

    inputs = [ui[k] for k in MODEL_KEYS + TRAIN_KEYS] + [advanced[s.name] for s in advanced_settings]
    n_main = len(MODEL_KEYS + TRAIN_KEYS)

    def values_of(*args: Any) -> dict[str, Any]:
        values = dict(zip(MODEL_KEYS + TRAIN_KEYS, args[:n_main]))
        values.update(settings_form.collect(advanced_settings, list(args[n_main:])))
        return values

    def do_preview(*args: Any):
        try:
            config = config_builder.train_config(values_of(*args))
        except TuneryError as err:
            return "", "", f"**{err}**"
        return config_builder.command_line("train", config), config_builder.to_yaml(config), ui.label("status_idle")

    def do_start(*args: Any):
        try:
            config = config_builder.train_config(values_of(*args))
            ws.check_datasets(config.get("dataset_dir", "data"), config.get("dataset"))
            manager.start("train", config, config["output_dir"])
        except TuneryError as err:
            return f"**{err}**", config_builder.command_line("train", {}), ""
        return (f"{ui.label('status_running')}: `{config['output_dir']}`",
                config_builder.command_line("train", config), config_builder.to_yaml(config))

    def do_abort(output_dir: str):
        run = manager.abort(output_dir)
        return ui.label("status_aborted") if run else ui.label("status_idle")

    def tick(output_dir: str, shown: str):
        """Redraw while the run is going and once when it ends; ``shown`` (per browser session) remembers
        the end already drawn, so a later message (e.g. a refused Start) is not overwritten."""
        run = manager.get(output_dir)
        keep = (gr.update(), gr.update(), gr.update(), gr.update(), shown)
        if run is None:
            return keep
        ended = "" if run.running else f"{run.output_dir}:{run.process.pid}"
        if ended and ended == shown:
            return keep
        progress = read_progress(run.output_dir)
        label = progress.label if progress.total else ""
        if run.running:
            state = f"{ui.label('status_running')}: {progress.label}"
        elif run.aborted:
            state = ui.label("status_aborted")
        elif run.returncode == 0:
            state = ui.label("status_done")
            progress.percentage = 100.0
        else:
            state = ui.label("status_failed")
        return progress_html(progress.percentage, label), state, run.log_tail(), loss_table(progress), ended

    def refresh_datasets(dataset_dir: str):
        """The dataset menu for the folder typed; the demo-data hint only while the folder is the demo data."""
        try:
            folder = ws.dataset_dir(dataset_dir)
        except TuneryError:
            return gr.update(choices=[]), gr.update(visible=False)
        return gr.update(choices=dataset_names(str(folder))), gr.update(visible=folder == demo_data_dir())

    def do_data_preview(*args: Any):
        values = values_of(*args)
        config = config_builder.clean({k: values[k] for k in ("model_name_or_path", "template", "dataset_dir", "dataset")})
        try:
            config["dataset_dir"] = str(ws.check_datasets(config.get("dataset_dir", "data"), config.get("dataset")))
            return preview(config)
        except TuneryError as err:
            return f"<p><b>{_escape(str(err))}</b></p>"

    def save_settings(name: str, *args: Any):
        try:
            path = ws.settings_file(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(config_builder.to_yaml(config_builder.clean(values_of(*args))), encoding="utf-8")
        except (TuneryError, OSError) as err:
            return f"**{err}**", gr.update()
        return f"saved to `{path}`", gr.update(choices=ws.settings_names())

    def load_settings(name: str):
        try:
            path = ws.settings_file(name)
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            if not isinstance(data, dict):
                raise OSError(f"{path} does not hold a mapping of settings")
        except (TuneryError, OSError, yaml.YAMLError) as err:
            return [gr.update()] * len(inputs) + [f"**{err}**"]
        updates = []
        for key in MODEL_KEYS + TRAIN_KEYS:
            value = data.get(key)
            if key == "dataset" and isinstance(value, str):
                value = [v.strip() for v in value.split(",")]
            updates.append(gr.update(value=value) if value is not None else gr.update())
        updates += [gr.update(value=v) for v in settings_form.form_values(advanced_settings, data)]
        return updates + [f"loaded `{path}`"]

    ui["preview_cmd"].click(do_preview, inputs, [ui["command_preview"], ui["yaml_preview"], status])
    ui["start"].click(do_start, inputs, [status, ui["command_preview"], ui["yaml_preview"]])
    ui["abort"].click(do_abort, [ui["output_dir"]], [status])
    ui["dataset_dir"].change(refresh_datasets, [ui["dataset_dir"]], [ui["dataset"], dataset_hint])
    ui["preview_data"].click(do_data_preview, inputs, [ui["data_preview"]])
    ui["save_settings"].click(save_settings, [ui["settings_name"], *inputs], [status, ui["settings_name"]])
    ui["load_settings"].click(load_settings, [ui["settings_name"]], [*inputs, status])
    timer = gr.Timer(1.0)
    shown = gr.State("")
    timer.tick(tick, [ui["output_dir"], shown], [ui["progress"], status, ui["log"], ui["loss_plot"], shown])

    def refresh_runs(output_dir: str, picked: str | None):
        infos = [run_info(f) for f in run_folders(ws.save_root, extra=_extra_folder(ws, output_dir))]
        rows = runs_table(infos, ws.root)
        names = [row[0] for row in rows]
        pick = picked if picked in names else (names[0] if names else None)
        return rows, gr.update(choices=names, value=pick)

    def show_run(picked: str | None):
        if not picked:
            return loss_table(Progress())
        try:
            folder = ws.resolve(picked, "run folder")
        except TuneryError:
            return gr.update()
        return loss_table(read_progress(folder))

    for trigger in (ui["refresh_runs"].click, ui["past_runs"].expand):
        trigger(refresh_runs, [ui["output_dir"], ui["run_pick"]], [ui["runs_table"], ui["run_pick"]])
    ui["run_pick"].change(show_run, [ui["run_pick"]], [ui["run_plot"]])


def _extra_folder(ws, output_dir: str) -> tuple:
    """The form's output folder, when it lies inside the workspace."""
    try:
        return (ws.resolve(output_dir, "output folder"),)
    except TuneryError:
        return ()


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
