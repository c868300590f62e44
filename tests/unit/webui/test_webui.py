"""Web UI pieces that need no browser: values -> config, progress parsing, run locking, path confinement,
login and binding, locales."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from tunery.cli import webui as webui_cli
from tunery.errors import ConfigError, ResourceError
from tunery.webui import config_builder
from tunery.webui.locales import LANGUAGES, texts
from tunery.webui.paths import Workspace, demo_data_dir
from tunery.webui.progress import loss_table, read_progress
from tunery.webui.runner import LOCK_NAME, RunManager

UI_VALUES = {
    "model_name_or_path": "smollm2-135m-instruct", "adapter_name_or_path": "", "template": "auto",
    "stage": "sft", "finetuning_type": "lora", "dataset_dir": "data", "dataset": ["alpaca_en_demo", "identity"],
    "learning_rate": "1e-4", "num_train_epochs": 3.0, "max_steps": -1.0, "per_device_train_batch_size": 2.0,
    "gradient_accumulation_steps": 1.0, "cutoff_len": 1024.0, "max_samples": 1000.0, "logging_steps": 5.0,
    "save_steps": 100.0, "lora_rank": 8.0, "lora_alpha": 16.0, "lora_dropout": 0.0, "lora_target": "all",
    "quantization_bit": "none", "output_dir": "saves/x",
}


def test_ui_values_become_a_valid_lf_style_config():
    config = config_builder.train_config(UI_VALUES)
    assert config["dataset"] == "alpaca_en_demo,identity"
    assert config["lora_rank"] == 8 and isinstance(config["lora_rank"], int)
    assert config["num_train_epochs"] == 3.0
    assert "adapter_name_or_path" not in config  # empty fields stay defaults
    assert "quantization_bit" not in config
    assert config["do_train"] is True and config["plot_loss"] is True
    assert yaml.safe_load(config_builder.to_yaml(config)) == config


def test_lora_fields_are_dropped_for_full_finetuning():
    config = config_builder.train_config({**UI_VALUES, "finetuning_type": "full", "quantization_bit": "4"})
    assert not any(k.startswith("lora_") for k in config) and "quantization_bit" not in config


def test_qlora_bits_kept():
    assert config_builder.train_config({**UI_VALUES, "quantization_bit": "4"})["quantization_bit"] == "4"


def test_invalid_ui_values_give_the_cli_error():
    with pytest.raises(ConfigError, match="learning_rate"):
        config_builder.train_config({**UI_VALUES, "learning_rate": "fast"})


def test_command_line_preview_round_trips_through_the_cli_parser():
    from tunery.config import load_config

    config = config_builder.train_config(UI_VALUES)
    line = config_builder.command_line("train", config)
    assert line.startswith("tunery train --model_name_or_path smollm2-135m-instruct")
    import shlex

    cfg, _ = load_config("train", shlex.split(line)[2:])
    assert cfg.data.dataset == "alpaca_en_demo,identity" and cfg.finetuning.lora_rank == 8


def test_progress_from_trainer_log(tmp_path):
    lines = [
        {"current_steps": 1, "total_steps": 4, "loss": 2.5, "percentage": 25.0, "elapsed_time": "0:00:01", "remaining_time": "0:00:03"},
        {"current_steps": 2, "total_steps": 4, "loss": 2.0, "percentage": 50.0, "elapsed_time": "0:00:02", "remaining_time": "0:00:02"},
        {"current_steps": 2, "total_steps": 4, "eval_loss": 2.2, "percentage": 50.0},
    ]
    (tmp_path / "trainer_log.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n{\"current_ste")
    progress = read_progress(tmp_path)
    assert (progress.current, progress.total, progress.percentage) == (2, 4, 50.0)
    assert progress.losses == [(1, 2.5), (2, 2.0)] and progress.eval_losses == [(2, 2.2)]
    table = loss_table(progress)
    assert list(table["series"]) == ["train", "train", "eval"]
    assert "2/4 (50%)" in progress.label


def test_progress_of_a_missing_log_is_zero(tmp_path):
    assert read_progress(tmp_path).percentage == 0.0


def test_second_run_into_the_same_output_dir_is_refused(tmp_path, monkeypatch):
    manager = RunManager()
    # a stand-in command that runs a while: `python -m tunery` with a sleeping module is overkill;
    # start the real CLI on `version` but keep the lock held by a live pid (our own).
    (tmp_path / LOCK_NAME).write_text(str(__import__("os").getpid()))
    with pytest.raises(ResourceError, match="already writing"):
        manager.start("version", {}, tmp_path)


def test_run_writes_yaml_log_and_releases_lock(tmp_path):
    manager = RunManager()
    run = manager.start("version", {"a": 1}, tmp_path, config_name="x.yaml")
    run.process.wait(timeout=60)
    assert yaml.safe_load((tmp_path / "x.yaml").read_text()) == {"a": 1}
    import time

    for _ in range(50):
        if not (tmp_path / LOCK_NAME).exists():
            break
        time.sleep(0.1)
    assert not (tmp_path / LOCK_NAME).exists()
    assert run.returncode is not None


def test_abort_stops_a_running_process(tmp_path, monkeypatch):
    import subprocess

    manager = RunManager()
    monkeypatch.setattr(sys, "executable", sys.executable)
    run = manager.start("version", {}, tmp_path)
    run.process.wait(timeout=60)
    # replace with a long-running child to abort
    run.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    manager.abort(tmp_path, timeout=10)
    assert run.aborted and run.returncode is not None


def test_locales_have_the_same_keys_and_no_empty_text():
    keys = {lang: set(texts(lang)) for lang in LANGUAGES}
    assert keys["en"] == keys["zh"]
    for lang in LANGUAGES:
        assert all(value.strip() for value in texts(lang).values())
    assert texts("zh")["tab_train"] != texts("en")["tab_train"]


def test_app_builds_in_both_languages():
    pytest.importorskip("gradio")
    from tunery.webui.app import build_app

    assert build_app("en") is not None and build_app("zh") is not None


def test_dataset_preview_is_the_data_preview_training_uses(reference_dir, tiny_chatml_model, tmp_path, monkeypatch):
    """The web UI's preview shows the processors' trained tokens (bold) of `tunery data preview`, entry for entry."""
    from html import unescape

    from tunery.config import parse_config
    from tunery.data.checker import preview_dataset
    from tunery.data.template import get_template
    from tunery.model.loader import load_tokenizer
    from tunery.webui.datasets_view import preview

    monkeypatch.setenv("TUNERY_CACHE", str(tmp_path / "cache"))
    config = {"model_name_or_path": str(tiny_chatml_model), "template": "auto",
              "dataset_dir": str(reference_dir / "lf" / "data"), "dataset": "identity", "cutoff_len": 40}
    html = preview(config, count=2)
    cfg = parse_config("data", config)
    tokenizer = load_tokenizer(cfg.model)
    entries = preview_dataset(cfg, tokenizer, get_template("auto", tokenizer, cfg.data), 2)
    assert len(entries) == 2 and html.count("<h4>") == 2
    # cutoff_len applies as in training: the first example is cut, and says so
    assert entries[0]["num_tokens"] == 40 and entries[0]["status"] == "truncated"
    assert "40 tokens, 20 trained, truncated" in html  # the reply is kept, the prompt cut (FR2-04)
    bold = [unescape(b.split("</b>")[0]) for b in html.split("<b>")[1:]]
    marked = [m.split("]]")[0] for e in entries for m in e["marked_text"].split("[[")[1:]]
    assert bold == marked and bold


# ----- confinement: nothing outside the workspace is read or written -----------------------------------
def _dataset_folder(root):
    data = root / "data"
    data.mkdir()
    (data / "tiny.json").write_text(json.dumps([{"instruction": "hi", "output": "ho"}]))
    (data / "dataset_info.json").write_text(json.dumps({"tiny": {"file_name": "tiny.json"},
                                                        "hub": {"hf_hub_url": "org/name"}}))
    return data


def test_datasets_inside_the_folder_are_accepted(tmp_path):
    ws = Workspace(tmp_path)
    data = _dataset_folder(tmp_path)
    assert ws.check_datasets("data", ["tiny", "hub", "tiny.json"]) == data.resolve()
    assert ws.check_datasets(str(data), "tiny") == data.resolve()
    assert ws.check_datasets(str(demo_data_dir()), "demo_identity") == demo_data_dir()


@pytest.mark.parametrize("name", ["../secret.json", "/etc/passwd", "sub/../../secret.json"])
def test_dataset_names_that_leave_the_folder_are_refused(tmp_path, name):
    ws = Workspace(tmp_path)
    _dataset_folder(tmp_path)
    (tmp_path / "secret.json").write_text("[]")
    with pytest.raises(ConfigError, match="not a name"):
        ws.check_datasets("data", [name])


def test_dataset_info_entry_pointing_out_is_refused(tmp_path):
    ws = Workspace(tmp_path)
    data = _dataset_folder(tmp_path)
    (data / "dataset_info.json").write_text(json.dumps({"evil": {"file_name": "../../../etc/passwd"}}))
    with pytest.raises(ConfigError, match="outside the dataset folder"):
        ws.check_datasets("data", "evil")


def test_dataset_symlink_out_of_the_folder_is_refused(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "private.json").write_text("[]")
    root = tmp_path / "ws"
    root.mkdir()
    ws = Workspace(root)
    data = _dataset_folder(root)
    (data / "link.json").symlink_to(outside / "private.json")
    with pytest.raises(ConfigError, match="not a name"):
        ws.check_datasets("data", ["link.json"])


@pytest.mark.parametrize("folder", ["/etc", "..", "data/../.."])
def test_dataset_folder_outside_the_workspace_is_refused(tmp_path, folder):
    ws = Workspace(tmp_path / "ws")
    (tmp_path / "ws").mkdir()
    with pytest.raises(ConfigError, match="outside the web UI's workspace"):
        ws.dataset_dir(folder)


def test_demo_data_is_the_default_dataset_folder_when_data_is_absent(tmp_path):
    folder, is_demo = Workspace(tmp_path).default_dataset_dir()
    assert is_demo and (Path(folder) / "dataset_info.json").is_file()
    from tunery.webui.datasets_view import dataset_names

    assert "demo_identity" in dataset_names(folder)
    (tmp_path / "data").mkdir()
    assert Workspace(tmp_path).default_dataset_dir() == ("data", False)


def test_settings_live_in_one_folder_by_name(tmp_path, monkeypatch):
    monkeypatch.delenv("TUNERY_HOME", raising=False)
    ws = Workspace(tmp_path)
    assert ws.settings_file("my_run") == tmp_path.resolve() / "webui_settings" / "my_run.yaml"
    assert ws.settings_file("a.yml").name == "a.yml"
    monkeypatch.setenv("TUNERY_HOME", str(tmp_path / "home"))
    assert Workspace(tmp_path).settings_dir == (tmp_path / "home" / "webui_settings").resolve()


@pytest.mark.parametrize("name", ["../x", "/tmp/x.yaml", "a/b", "..", ".hidden", "", "a\\b", "x..yaml"])
def test_settings_names_with_paths_are_refused(tmp_path, name):
    with pytest.raises(ConfigError, match="settings name"):
        Workspace(tmp_path).settings_file(name)


def test_settings_symlink_out_is_refused(tmp_path):
    ws = Workspace(tmp_path / "ws")
    ws.settings_dir.mkdir(parents=True)
    (tmp_path / "secret.yaml").write_text("a: 1\n")
    (ws.settings_dir / "leak.yaml").symlink_to(tmp_path / "secret.yaml")
    with pytest.raises(ConfigError, match="links outside"):
        ws.settings_file("leak")
    assert ws.settings_names() == []


def _bytes_of(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("marker", ["train_results.json", "notes.txt"])
def test_finished_or_foreign_output_folder_is_left_untouched(tmp_path, marker):
    out = tmp_path / "saves" / "done"
    out.mkdir(parents=True)
    (out / "training_args.yaml").write_text("learning_rate: 0.1\n")
    (out / marker).write_text("{}")
    before = _bytes_of(out)
    manager = RunManager(Workspace(tmp_path))
    with pytest.raises(ResourceError, match="finished train run" if marker.startswith("train") else "did not write"):
        manager.start("train", {"learning_rate": 5.0}, "saves/done")
    assert _bytes_of(out) == before and manager.get("saves/done") is None


def test_unfinished_run_folder_may_be_resumed(tmp_path):
    out = tmp_path / "run"
    (out / "checkpoint-2").mkdir(parents=True)
    for name in ("training_args.yaml", "trainer_log.jsonl", "running_log.txt"):
        (out / name).write_text("")
    assert Workspace(tmp_path).output_dir("run", "train") == out.resolve()


@pytest.mark.parametrize("folder", ["/tmp/tunery-elsewhere", "../out", "saves/../../out"])
def test_output_folder_outside_the_workspace_is_refused_before_writing(tmp_path, folder):
    root = tmp_path / "ws"
    root.mkdir()
    with pytest.raises(ConfigError, match="outside"):
        RunManager(Workspace(root)).start("train", {}, folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ws"] and not any(root.iterdir())


def test_output_symlink_out_of_the_workspace_is_refused(tmp_path):
    target = tmp_path / "target"
    target.mkdir()
    root = tmp_path / "ws"
    root.mkdir()
    (root / "saves").symlink_to(target)
    with pytest.raises(ConfigError, match="outside"):
        RunManager(Workspace(root)).start("train", {}, "saves/run")
    assert not any(target.iterdir())


def test_unwritable_output_folder_is_refused(tmp_path):
    import os

    if os.geteuid() == 0:
        pytest.skip("root can write anywhere")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(ResourceError, match="cannot write"):
            Workspace(tmp_path).output_dir("ro/run", "train")
    finally:
        ro.chmod(0o700)


def test_output_file_instead_of_folder_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ResourceError, match="not a folder"):
        Workspace(tmp_path).output_dir("f", "eval")


def test_evaluation_with_results_is_refused_before_its_yaml_is_written(tmp_path):
    out = tmp_path / "eval"
    out.mkdir()
    (out / "results.json").write_text("{}")
    with pytest.raises(ResourceError, match="finished eval"):
        RunManager(Workspace(tmp_path)).start("eval", {"task": "x"}, "eval", config_name="eval_args.yaml")
    assert not (out / "eval_args.yaml").exists()


# ----- login and binding -------------------------------------------------------------------------------
def test_auth_parsing():
    from tunery.webui.app import parse_auth

    assert parse_auth("ann:s3:cret") == ("ann", "s3:cret")
    assert parse_auth("") is None and parse_auth(None) is None
    for bad in ("ann", ":pw", "ann:"):
        with pytest.raises(ConfigError, match="user:password"):
            parse_auth(bad)


def test_exposure_warning_only_beyond_loopback_without_login():
    from tunery.webui.app import exposure_warning

    assert exposure_warning("127.0.0.1", None) is None
    assert exposure_warning("localhost", None) is None
    assert exposure_warning("127.0.1.1", None) is None
    assert "0.0.0.0 without a login" in exposure_warning("0.0.0.0", None)
    assert "--auth" in exposure_warning("192.168.1.5", None)
    assert exposure_warning("0.0.0.0", ("a", "b")) is None
    assert "public link" in exposure_warning("127.0.0.1", None, share=True)


class _FakeApp:
    def __init__(self):
        self.kwargs = None

    def queue(self, **_):
        return self

    def launch(self, **kwargs):
        self.kwargs = kwargs


@pytest.fixture
def fake_app(monkeypatch):
    from tunery.webui import app as app_module

    fake, built = _FakeApp(), {}

    def build(lang, follow_browser=True, workspace=None):
        built.update(lang=lang, follow_browser=follow_browser)
        return fake

    monkeypatch.setattr(app_module, "build_app", build)
    for key in ("GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT", "GRADIO_SHARE", "TUNERY_WEBUI_AUTH", "LANGUAGE", "LC_ALL",
                "LC_MESSAGES"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("LANG", "C.UTF-8")
    return app_module, fake, built


def test_launch_passes_auth_and_warns_when_exposed(fake_app, capsys):
    app_module, fake, built = fake_app
    assert webui_cli.main(["--host", "0.0.0.0", "--port", "7999"]) == 0
    assert fake.kwargs["server_name"] == "0.0.0.0" and fake.kwargs["server_port"] == 7999
    assert fake.kwargs["auth"] is None and "without a login" in capsys.readouterr().err
    assert built == {"lang": "en", "follow_browser": True}

    webui_cli.main(["--host", "0.0.0.0", "--auth", "ann:pw", "--lang", "zh"])
    assert fake.kwargs["auth"] == ("ann", "pw") and capsys.readouterr().err == ""
    assert built == {"lang": "zh", "follow_browser": False}


def test_launch_reads_auth_and_host_from_the_environment(fake_app, monkeypatch, capsys):
    app_module, fake, _ = fake_app
    monkeypatch.setenv("TUNERY_WEBUI_AUTH", "bob:pw")
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    webui_cli.main([])
    assert fake.kwargs["auth"] == ("bob", "pw") and fake.kwargs["server_name"] == "0.0.0.0"
    assert capsys.readouterr().err == ""
    monkeypatch.delenv("TUNERY_WEBUI_AUTH")
    monkeypatch.delenv("GRADIO_SERVER_NAME")
    webui_cli.main([])
    assert fake.kwargs["server_name"] == "127.0.0.1" and fake.kwargs["server_port"] == 7860
    assert capsys.readouterr().err == ""


def test_language_follows_the_locale():
    from tunery.webui.app import default_lang

    assert default_lang({"LANG": "zh_CN.UTF-8"}) == "zh"
    assert default_lang({"LANG": "en_US.UTF-8"}) == "en"
    assert default_lang({"LANGUAGE": "zh_TW", "LANG": "en_US"}) == "zh"
    assert default_lang({}) == "en"


# ----- defaults, runs and progress bar ------------------------------------------------------------------
def test_default_evaluation_task_exists():
    from tunery.evaluation.tasks import find_task_folder, has_split, parse_task_name
    from tunery.webui.tab_jobs import TASKS

    name, split = parse_task_name(TASKS[0])
    folder = find_task_folder(name, "does-not-exist")
    assert folder is not None and has_split(folder, split)


def test_progress_bar_is_html_not_a_slider():
    from tunery.webui.progress import progress_html

    html = progress_html(42.4, "3/7 <x>")
    assert "role='progressbar'" in html and "aria-valuenow='42'" in html and "width:42.4%" in html
    assert "&lt;x&gt;" in html and "<input" not in html
    assert "aria-valuenow='100'" in progress_html(250)


def test_runs_and_adapter_choices_come_from_the_save_root(tmp_path):
    from tunery.webui.runs import adapter_choices, run_folders, run_info, runs_table

    saves = tmp_path / "saves"
    done = saves / "done"
    (done / "checkpoint-3").mkdir(parents=True)
    (done / "checkpoint-6").mkdir()
    for folder in (done, done / "checkpoint-3", done / "checkpoint-6"):
        (folder / "adapter_config.json").write_text("{}")
    (done / "train_results.json").write_text("{}")
    (done / "trainer_log.jsonl").write_text(json.dumps({"current_steps": 6, "total_steps": 6, "loss": 1.5}) + "\n")
    stopped = saves / "stopped"
    (stopped / "checkpoint-2").mkdir(parents=True)
    (stopped / "checkpoint-2" / "adapter_config.json").write_text("{}")
    (saves / "not_a_run").mkdir()
    folders = run_folders(saves)
    assert {f.name for f in folders} == {"done", "stopped"}
    assert set(adapter_choices(folders, tmp_path.resolve())) == {
        "saves/done", "saves/done/checkpoint-6", "saves/done/checkpoint-3", "saves/stopped/checkpoint-2"}
    rows = {row[0]: row for row in runs_table([run_info(f) for f in folders], tmp_path.resolve())}
    assert rows["saves/done"] == ["saves/done", "finished", "6/6", 1.5]
    assert rows["saves/stopped"][1] == "stopped"


def _model_folder(folder: Path, model_type: str, chat_template: str | None = None, weights="model.safetensors"):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    (folder / weights).write_bytes(b"")
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": chat_template} if chat_template else {}))
    return folder


def test_model_choices_list_the_alias_and_model_folders_in_the_workspace(tmp_path):
    from tunery.webui.runs import model_choices

    _model_folder(tmp_path / "saves" / "merged", "qwen2")
    _model_folder(tmp_path / "saves" / "run" / "export", "llama", weights="pytorch_model.bin")
    _model_folder(tmp_path / "models" / "base", "gemma")
    (tmp_path / "saves" / "adapter_only").mkdir()
    (tmp_path / "saves" / "adapter_only" / "adapter_config.json").write_text("{}")
    (tmp_path / "saves" / "no_weights").mkdir()
    (tmp_path / "saves" / "no_weights" / "config.json").write_text("{}")
    outside = _model_folder(tmp_path.parent / f"{tmp_path.name}_outside", "qwen2")
    (tmp_path / "saves" / "link_out").symlink_to(outside, target_is_directory=True)
    assert model_choices(tmp_path) == ["smollm2-135m-instruct", "models/base", "saves/merged", "saves/run/export"]
    assert model_choices(tmp_path / "empty") == ["smollm2-135m-instruct"]


def test_template_suggestion_prefers_the_tokenizer_then_an_unambiguous_builtin():
    from tunery.data.template import list_templates
    from tunery.webui.runs import _TEMPLATE_BY_MODEL_TYPE, suggest_template

    assert suggest_template("qwen2", True) == "auto"
    assert suggest_template("qwen2", False) == "qwen"
    assert suggest_template("Gemma3_text", False) == "gemma3"
    assert suggest_template("llama", False) == "default"  # llama 2, llama 3 and many others share the type
    assert suggest_template(None, False) == "default"
    assert set(_TEMPLATE_BY_MODEL_TYPE.values()) <= set(list_templates())


def test_template_preset_reads_the_picked_model_folder(tmp_path):
    from tunery.webui.runs import model_template

    _model_folder(tmp_path / "saves" / "chat", "llama", chat_template="{{ messages }}")
    _model_folder(tmp_path / "saves" / "base", "phi3")
    jinja = _model_folder(tmp_path / "saves" / "jinja", "llama")
    (jinja / "chat_template.jinja").write_text("{{ messages }}")
    _model_folder(tmp_path / "saves" / "plain", "llama")
    outside = _model_folder(tmp_path.parent / f"{tmp_path.name}_out", "qwen2")
    assert model_template("smollm2-135m-instruct", tmp_path) == "auto"
    assert model_template("saves/chat", tmp_path) == "auto"
    assert model_template("saves/jinja", tmp_path) == "auto"
    assert model_template(str(tmp_path / "saves" / "base"), tmp_path) == "phi"
    assert model_template("saves/plain", tmp_path) == "default"
    # nothing to read: the template is left as it is
    assert model_template(str(outside), tmp_path) is None
    assert model_template("../" + outside.name, tmp_path) is None
    assert model_template("Qwen/Qwen2.5-0.5B-Instruct", tmp_path) is None
    assert model_template("", tmp_path) is None


def test_model_field_is_a_picker_that_takes_typed_paths(tmp_path):
    gr = pytest.importorskip("gradio")
    from tunery.webui.app import build_app

    _model_folder(tmp_path / "saves" / "merged", "qwen2")
    app = build_app("en", workspace=Workspace(tmp_path))
    picker = next(b for b in app.blocks.values() if getattr(b, "elem_id", None) == "model_name_or_path")
    assert isinstance(picker, gr.Dropdown) and picker.allow_custom_value
    assert [c[1] for c in picker.choices] == ["smollm2-135m-instruct", "saves/merged"]
    assert picker.value == "smollm2-135m-instruct"


def _app_blocks():
    pytest.importorskip("gradio")
    from tunery.webui.app import build_app

    return list(build_app("en").blocks.values())


def test_every_train_setting_is_reachable_in_the_form():
    """Each setting of the groups `tunery train` reads has a component (main form or generated section)."""
    from tunery.config import COMMAND_GROUPS, group_class
    from tunery.config.groups import settings_of
    from tunery.config.lf_keys import REFUSED

    ids = {getattr(block, "elem_id", None) for block in _app_blocks()}
    names = {f.name for g in COMMAND_GROUPS["train"] for _, f, _ in settings_of(group_class(g))}
    unreachable = sorted(n for n in names - set(REFUSED) if n not in ids and f"setting_{n}" not in ids)
    assert unreachable == []
    # refused settings are not offered (they could only stop the run); honoured ones are (shift_attn, issue #15)
    assert "setting_use_unsloth" in ids and "setting_use_unsloth_gc" in ids  # CUDA-only, honoured (issue #15)
    assert "setting_use_kt" not in ids and "setting_mixture_of_depths" not in ids
    assert "setting_shift_attn" in ids and "setting_enable_liger_kernel" in ids and "setting_fp8" in ids
    assert "setting_loftq_init" in ids and "setting_preserve_thinking" in ids
    assert "setting_image_max_pixels" in ids and "setting_freeze_vision_tower" in ids


def test_generated_sections_are_folded_and_named_like_the_board():
    import gradio as gr

    sections = {b.elem_id: b for b in _app_blocks()
                if isinstance(b, gr.Accordion) and str(b.elem_id).startswith("section_")}
    assert {"section_lora", "section_quantization", "section_template", "section_rope", "section_booster",
            "section_rlhf", "section_freeze", "section_method"} <= set(sections)
    assert all(b.open is False for b in sections.values())


def test_generated_settings_sit_in_the_boards_sections():
    from tunery.webui import settings_form
    from tunery.webui.tab_train import MODEL_KEYS, TRAIN_KEYS

    section = {s.name: s.section for s in settings_form.train_settings(shown=MODEL_KEYS + TRAIN_KEYS)}
    for name in ("default_system", "tool_format", "enable_thinking", "preserve_thinking"):
        assert section[name] == "template", name
    for name in ("flash_attn", "enable_liger_kernel", "use_liger_kernel", "fp8", "fp8_backend",
                 "fp8_enable_fsdp_float8_all_gather", "pure_bf16"):
        assert section[name] == "booster", name
    assert section["ld_alpha"] == "RLHF"
    for name in ("pissa_init", "loftq_init", "loftq_bits", "loftq_iter"):
        assert section[name] == "LoRA", name
    assert section["use_unsloth"] == section["use_unsloth_gc"] == "booster"  # LLaMA-Factory's booster choice


def test_generated_settings_round_trip_through_yaml_and_the_parser():
    from tunery.config import parse_config
    from tunery.webui import settings_form
    from tunery.webui.tab_train import MODEL_KEYS, TRAIN_KEYS

    settings = settings_form.train_settings(shown=MODEL_KEYS + TRAIN_KEYS)
    untouched = settings_form.form_values(settings, {})
    assert settings_form.collect(settings, untouched) == {}  # defaults add nothing
    chosen = {"use_dora": True, "rope_scaling": "linear", "pref_beta": 0.2, "weight_decay": 0.01,
              "quantization_type": "fp4", "default_system": "Be brief.", "lr_scheduler_type": "constant",
              "disable_gradient_checkpointing": True, "neat_packing": True}
    shown = settings_form.form_values(settings, chosen)
    assert settings_form.collect(settings, shown) == chosen
    config = config_builder.train_config({**UI_VALUES, **settings_form.collect(settings, shown)})
    cfg = parse_config("train", yaml.safe_load(config_builder.to_yaml(config)))
    assert cfg.finetuning.use_dora is True and cfg.model.rope_scaling == "linear"
    assert cfg.finetuning.pref_beta == pytest.approx(0.2) and cfg.training.weight_decay == pytest.approx(0.01)
    assert cfg.model.quantization_type == "fp4" and cfg.data.default_system == "Be brief."
    assert str(cfg.training.lr_scheduler_type.value) == "constant" and cfg.data.neat_packing is True
