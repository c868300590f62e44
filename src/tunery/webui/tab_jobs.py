"""The Evaluate & Predict and Export tabs: run `tunery predict|eval|export` and show what they wrote."""

from __future__ import annotations

import json
import time
from typing import Any

import gradio as gr

from tunery.errors import TuneryError
from tunery.webui import config_builder
from tunery.webui.datasets_view import dataset_names
from tunery.webui.runner import Run, RunManager
from tunery.webui.ui_state import UI

RESULT_FILES = ("predict_results.json", "results.json", "all_results.json")
# Benchmarks offered in the task menu; the packaged samples run offline, the others download once.
TASKS = ("sample_en_test", "sample_zh_test", "mmlu_test", "cmmlu_test", "ceval_validation")


def _wait_and_report(run: Run, files: tuple[str, ...]) -> str:
    while run.running:
        time.sleep(1.0)
    for name in files:
        path = run.output_dir / name
        if path.is_file():
            return json.dumps(json.loads(path.read_text(encoding="utf-8")), indent=2, ensure_ascii=False)
    return run.log_tail()


def build_eval(ui: UI, manager: RunManager) -> None:
    L = ui.label
    ws = ui.workspace
    data_dir, _ = ws.default_dataset_dir()
    ui.add("eval_mode", gr.Radio(["predict", "mmlu"], value="predict", label=L("eval_mode"), elem_id="eval_mode"))
    with gr.Row():
        ui.add("eval_dataset", gr.Dropdown(choices=dataset_names(data_dir), multiselect=True, allow_custom_value=True,
                                           label=L("eval_dataset"), elem_id="eval_dataset"))
        ui.add("task", gr.Dropdown(list(TASKS), value=TASKS[0], allow_custom_value=True, label=L("task"),
                                   elem_id="task"))
        ui.add("n_shot", gr.Number(value=5, precision=0, label=L("n_shot"), elem_id="n_shot"))
    with gr.Row():
        ui.add("max_new_tokens", gr.Number(value=128, precision=0, label=L("max_new_tokens"), elem_id="eval_max_new_tokens"))
        ui.add("eval_output_dir", gr.Textbox(value="saves/webui-eval", label=L("output_dir"), elem_id="eval_output_dir"))
    ui.add("run_eval", gr.Button(L("run_eval"), variant="primary", elem_id="run_eval"))
    ui.add("results", gr.Code(label=L("results"), language="json", elem_id="eval_results"))

    def run(model: str, adapter: str, template: str, dataset_dir: str, mode: str, eval_dataset: list[str],
            task: str, n_shot: float, max_new_tokens: float, output_dir: str) -> str:
        base = {"model_name_or_path": model, "adapter_name_or_path": adapter, "template": template}
        try:
            if mode == "predict":
                config = config_builder.predict_config({**base, "dataset_dir": dataset_dir, "eval_dataset": eval_dataset,
                                                        "max_new_tokens": max_new_tokens, "output_dir": output_dir})
                ws.check_datasets(config.get("dataset_dir", "data"), config.get("eval_dataset"))
                run_ = manager.start("predict", config, output_dir, config_name="predict_args.yaml")
            else:
                config = config_builder.eval_config({**base, "task": task, "n_shot": n_shot, "save_dir": output_dir})
                if "/" in task or "\\" in task or task.startswith("."):
                    ws.resolve(task, "task folder")  # a task given as a folder must lie in the workspace
                run_ = manager.start("eval", config, output_dir, config_name="eval_args.yaml")
        except TuneryError as err:
            return str(err)
        return _wait_and_report(run_, RESULT_FILES)

    ui["run_eval"].click(
        run,
        [ui["model_name_or_path"], ui["adapter_name_or_path"], ui["template"], ui["dataset_dir"], ui["eval_mode"],
         ui["eval_dataset"], ui["task"], ui["n_shot"], ui["max_new_tokens"], ui["eval_output_dir"]],
        [ui["results"]],
    )


def build_export(ui: UI, manager: RunManager) -> None:
    L = ui.label
    with gr.Row():
        ui.add("export_dir", gr.Textbox(value="saves/webui-export", label=L("export_dir"), elem_id="export_dir"))
        ui.add("export_size", gr.Number(value=5, precision=0, label=L("export_size"), elem_id="export_size"))
        ui.add("export_format", gr.Radio(["safetensors", "gguf"], value="safetensors", label=L("export_format"),
                                         elem_id="export_format"))
        ui.add("export_gguf_type", gr.Dropdown(["f32", "f16", "bf16", "q8_0"], value="f16", label=L("export_gguf_type"),
                                               elem_id="export_gguf_type"))
    ui.add("run_export", gr.Button(L("run_export"), variant="primary", elem_id="run_export"))
    ui.add("export_status", gr.Textbox(lines=8, label=L("export_status"), elem_id="export_status"))

    def run(model: str, adapter: str, template: str, export_dir: str, size: float, fmt: str, gguf_type: str) -> str:
        values: dict[str, Any] = {"model_name_or_path": model, "adapter_name_or_path": adapter, "template": template,
                                  "export_dir": export_dir, "export_size": size, "export_format": fmt}
        if fmt == "gguf":
            values["export_gguf_type"] = gguf_type
        try:
            config = config_builder.export_config(values)
            run_ = manager.start("export", config, export_dir, config_name="export_args.yaml")
        except TuneryError as err:
            return str(err)
        while run_.running:
            time.sleep(1.0)
        files = sorted(p.name for p in run_.output_dir.iterdir())
        return run_.log_tail(15) + "\n\nfiles: " + ", ".join(files)

    ui["run_export"].click(
        run,
        [ui["model_name_or_path"], ui["adapter_name_or_path"], ui["template"], ui["export_dir"], ui["export_size"],
         ui["export_format"], ui["export_gguf_type"]],
        [ui["export_status"]],
    )
