"""The users' LLaMA-Factory tutorial, command by command, with ``tunery`` in place of ``llamafactory-cli``.

Each test is one workflow of the tutorial (dataset formats, ``train -h``, the long LoRA command line,
resuming, batch prediction, ``eval`` by YAML and by flags, the troubleshooting advice), run through
the real CLI on the tiny ChatML model with datasets written in exactly the tutorial's formats and
dataset_info.json entries. Flags keep the tutorial's spelling (``--do_train True``, ``--fp16 True``,
``--packing False``); only sizes shrink (steps, samples, cutoff, new tokens) so the file stays fast.
See docs/tutorial.md for the mapping written for users.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from tunery.cli.main import main as tunery

REPO = Path(__file__).resolve().parents[2]

# About 3 minutes on the shared 2-core machine (about 50 s of CPU): slow, CI still runs it.
pytestmark = pytest.mark.slow

# ---------------------------------------------------------------------------------------------
# Datasets in the tutorial's shapes (section 3) and their dataset_info.json entries, verbatim.
# ---------------------------------------------------------------------------------------------
TOOLS = [{"name": "get_weather", "description": "Weather of a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
CALL = {"name": "get_weather", "arguments": {"city": "Paris"}}

ALPACA = [
    {"instruction": f"What is {i} plus {i}?", "input": "", "output": f"{2 * i}", "system": "You are a calculator.",
     "history": [["Hello", "Hi there"], ["Ready?", "Yes"]]}
    for i in range(10)
] + [{"instruction": "翻译成英文", "input": "你好", "output": "Hello"}]

SHAREGPT = [
    {"conversations": [{"from": "human", "value": "What is the weather in Paris?"},
                       {"from": "function_call", "value": json.dumps(CALL)},
                       {"from": "observation", "value": json.dumps({"temp": 21})},
                       {"from": "gpt", "value": "It is 21 degrees in Paris."}],
     "system": "You are a weather bot.", "tools": json.dumps(TOOLS)}
] * 3 + [  # system and tools are optional in the tutorial's shape
    {"conversations": [{"from": "human", "value": "Hello"}, {"from": "gpt", "value": "Hi, how are you?"}]}
] * 3

PREF_ALPACA = [{"instruction": f"Say hi {i}", "input": "", "chosen": "Hello!", "rejected": "Go away."} for i in range(6)]
PREF_SHAREGPT = [
    {"conversations": [{"from": "human", "value": f"Greet me {i}"}],
     "chosen": {"from": "gpt", "value": "Hello friend!"}, "rejected": {"from": "gpt", "value": "No."}}
    for i in range(6)
]
PRETRAIN = [{"text": "The quick brown fox jumps over the lazy dog. " * 3} for _ in range(8)]

DATASET_INFO = {
    "my_pt": {"file_name": "pt.json", "columns": {"prompt": "text"}},
    "my_alpaca": {"file_name": "alpaca.json", "columns": {
        "prompt": "instruction", "query": "input", "response": "output", "system": "system", "history": "history"}},
    "my_sharegpt": {"file_name": "sharegpt.json", "formatting": "sharegpt", "columns": {
        "messages": "conversations", "system": "system", "tools": "tools"}},
    "my_pref_alpaca": {"file_name": "pref_alpaca.json", "ranking": True, "columns": {
        "prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected"}},
    "my_pref_sharegpt": {"file_name": "pref_sharegpt.json", "formatting": "sharegpt", "ranking": True, "columns": {
        "messages": "conversations", "chosen": "chosen", "rejected": "rejected"}},
}
FILES = {"alpaca.json": ALPACA, "sharegpt.json": SHAREGPT, "pref_alpaca.json": PREF_ALPACA,
         "pref_sharegpt.json": PREF_SHAREGPT, "pt.json": PRETRAIN}

# Every flag of the tutorial's `llamafactory-cli train` line, `train -h` must list them all.
TUTORIAL_TRAIN_FLAGS = [
    "stage", "do_train", "model_name_or_path", "preprocessing_num_workers", "finetuning_type", "template",
    "flash_attn", "dataset_dir", "dataset", "cutoff_len", "learning_rate", "num_train_epochs", "max_samples",
    "per_device_train_batch_size", "gradient_accumulation_steps", "lr_scheduler_type", "max_grad_norm",
    "logging_steps", "save_steps", "warmup_steps", "optim", "packing", "report_to", "output_dir", "fp16",
    "plot_loss", "ddp_timeout", "include_num_input_tokens_seen", "lora_rank", "lora_alpha", "lora_dropout",
    "lora_target", "deepspeed", "resume_from_checkpoint",
    # batch prediction and batch evaluation lines
    "do_predict", "adapter_name_or_path", "eval_dataset", "overwrite_cache", "overwrite_output_dir",
    "per_device_eval_batch_size", "predict_with_generate", "quantization_method", "quantization_bit",
    "max_new_tokens", "top_p", "temperature", "eval_accumulation_steps",
]


@pytest.fixture(scope="module")
def tutorial_env(tmp_path_factory):
    """Keep Tunery's caches (tokenized data, hub tasks) inside the test's temporary folder."""
    cache = tmp_path_factory.mktemp("tunery-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUNERY_CACHE", str(cache))
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield cache


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    for name, rows in FILES.items():
        (root / name).write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    (root / "dataset_info.json").write_text(json.dumps(DATASET_INFO, indent=2), encoding="utf-8")
    return root


@contextmanager
def tunery_logs():
    """Collect Tunery's log messages (its logger does not propagate, so caplog cannot see them)."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect(level=logging.DEBUG)
    logger = logging.getLogger("tunery")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def messages_of(records: list[logging.LogRecord]) -> str:
    return "\n".join(r.getMessage() for r in records)


def cli(*args: str, env: dict[str, str] | None = None, timeout: int = 180) -> subprocess.CompletedProcess:
    """``python -m tunery ...`` in a fresh process: what a user's shell sees (exit code, stderr)."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO / "src"), **(env or {})}
    return subprocess.run([sys.executable, "-m", "tunery", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=REPO)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def train_tokens(model: Path, data: Path, output_dir: Path, *extra: str) -> list[str]:
    """The tutorial's long `train` command line, flag for flag, at test size."""
    return [
        "train",
        "--stage", "sft",
        "--do_train", "True",
        "--model_name_or_path", str(model),
        "--preprocessing_num_workers", "2",
        "--finetuning_type", "lora",
        "--template", "qwen",  # the builtin that matches the tiny model's ChatML template
        "--flash_attn", "auto",
        "--dataset_dir", str(data),
        "--dataset", "my_alpaca,my_sharegpt",
        "--cutoff_len", "128",
        "--learning_rate", "5e-05",
        "--num_train_epochs", "3.0",
        "--max_samples", "8",
        "--per_device_train_batch_size", "2",
        "--gradient_accumulation_steps", "2",
        "--lr_scheduler_type", "cosine",
        "--max_grad_norm", "1.0",
        "--logging_steps", "1",
        "--save_steps", "1",
        "--warmup_steps", "0",
        "--optim", "adamw_torch",
        "--packing", "False",
        "--report_to", "none",
        "--output_dir", str(output_dir),
        "--fp16", "True",
        "--plot_loss", "True",
        "--ddp_timeout", "180000000",
        "--include_num_input_tokens_seen", "True",
        "--lora_rank", "8",
        "--lora_alpha", "16",
        "--lora_dropout", "0",
        "--lora_target", "all",
        "--max_steps", "2",  # test size; the tutorial trains 3 epochs
        *extra,
    ]


@pytest.fixture(scope="module")
def trained(tiny_chatml_model, data_dir, tutorial_env, tmp_path_factory):
    """The tutorial's LoRA command, run once; later workflows use its output_dir and adapters."""
    out = tmp_path_factory.mktemp("saves") / "lora" / "train"
    with tunery_logs() as logs:
        code = tunery(train_tokens(tiny_chatml_model, data_dir, out))
    return {"code": code, "out": out, "logs": messages_of(logs)}


# ---------------------------------------------------------------------------------------------
# Section 1: `train -h` and `webui`
# ---------------------------------------------------------------------------------------------
def test_train_help_lists_every_tutorial_flag(capsys):
    assert tunery(["train", "-h"]) == 0
    shown = capsys.readouterr().out
    missing = [f for f in TUTORIAL_TRAIN_FLAGS if f"--{f} " not in shown]
    assert missing == []


@pytest.mark.slow
def test_webui_serves_the_page(tutorial_env):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, "-m", "tunery", "webui"], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, page = time.monotonic() + 120, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
                    page = (resp.status, resp.read().decode("utf-8", "replace"))
                    break
            except OSError:
                time.sleep(1)
        assert proc.poll() is None, proc.stdout.read()
        assert page is not None and page[0] == 200
        assert "gradio" in page[1].lower()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# ---------------------------------------------------------------------------------------------
# Section 3: every dataset shape and dataset_info.json entry of the tutorial
# ---------------------------------------------------------------------------------------------
def test_dataset_formats_become_the_right_conversations(data_dir, tutorial_env):
    from tunery.config import parse_config
    from tunery.data import load_records

    def records(name: str, stage: str) -> list[dict]:
        cfg = parse_config("data", {"dataset": name, "dataset_dir": str(data_dir), "stage": stage})
        return load_records(cfg, stage=stage)

    alpaca = records("my_alpaca", "sft")
    assert len(alpaca) == len(ALPACA)
    assert alpaca[0]["messages"] == [  # system first, history turns in order, then instruction -> output
        {"role": "system", "content": "You are a calculator."},
        {"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi there"},
        {"role": "user", "content": "Ready?"}, {"role": "assistant", "content": "Yes"},
        {"role": "user", "content": "What is 0 plus 0?"}, {"role": "assistant", "content": "0"},
    ]
    # instruction and input are joined into the human turn
    assert alpaca[-1]["messages"] == [{"role": "user", "content": "翻译成英文\n你好"},
                                      {"role": "assistant", "content": "Hello"}]

    sharegpt = records("my_sharegpt", "sft")
    assert [m["role"] for m in sharegpt[0]["messages"]] == ["system", "user", "function_call", "tool", "assistant"]
    assert json.loads(sharegpt[0]["messages"][2]["content"]) == CALL
    assert json.loads(sharegpt[0]["tools"]) == TOOLS
    assert sharegpt[-1]["tools"] is None and [m["role"] for m in sharegpt[-1]["messages"]] == ["user", "assistant"]

    for name, prompt, chosen, rejected in (("my_pref_alpaca", "Say hi 0", "Hello!", "Go away."),
                                           ("my_pref_sharegpt", "Greet me 0", "Hello friend!", "No.")):
        pairs = records(name, "dpo")
        assert len(pairs) == 6
        assert pairs[0]["messages"] == [{"role": "user", "content": prompt}]
        assert pairs[0]["chosen"] == {"role": "assistant", "content": chosen}
        assert pairs[0]["rejected"] == {"role": "assistant", "content": rejected}

    texts = records("my_pt", "pt")
    assert [r["messages"][0]["content"] for r in texts] == [row["text"] for row in PRETRAIN]


@pytest.mark.parametrize("stage,datasets", [("sft", "my_alpaca,my_sharegpt"), ("pt", "my_pt"),
                                            ("dpo", "my_pref_alpaca,my_pref_sharegpt")])
def test_data_check_accepts_every_tutorial_dataset(tiny_chatml_model, data_dir, tutorial_env, capsys, stage, datasets):
    code = tunery(["data", "check", "--dataset_dir", str(data_dir), "--dataset", datasets, "--stage", stage,
                   "--model_name_or_path", str(tiny_chatml_model), "--template", "qwen", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert {r["name"]: (r["status"], r["invalid"]) for r in report} == {n: ("ok", 0) for n in datasets.split(",")}


# ---------------------------------------------------------------------------------------------
# Section 4: the LoRA command line, its outputs, resuming
# ---------------------------------------------------------------------------------------------
def test_tutorial_train_command_writes_the_promised_outputs(trained):
    out = trained["out"]
    assert trained["code"] == 0
    # fp16 on a CPU: Tunery trains in fp32 and says why
    assert "fp16 requested but no GPU is present: training in fp32" in trained["logs"]
    # (1) the adapter is the main result
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["r"] == 8 and adapter["lora_alpha"] == 16 and adapter["lora_dropout"] == 0
    assert {name.rsplit(".", 1)[-1] for name in adapter["target_modules"]} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                              "down_proj"}  # lora_target all: every linear layer but the head
    assert (out / "adapter_model.safetensors").stat().st_size > 0
    # (2) the loss plot and the training log
    assert (out / "training_loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log = read_jsonl(out / "trainer_log.jsonl")
    assert [row["current_steps"] for row in log] == [1, 2]  # logging_steps 1
    assert all(row["total_steps"] == 2 and row["loss"] > 0 for row in log)
    # include_num_input_tokens_seen True: tokens are counted
    assert 0 < log[0]["total_tokens"] < log[1]["total_tokens"]
    results = json.loads((out / "all_results.json").read_text())
    assert results["num_input_tokens_seen"] == log[1]["total_tokens"] and results["train_loss"] > 0
    # (3) the backups: a checkpoint per save_steps, and the resolved settings
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    settings = yaml.safe_load((out / "training_args.yaml").read_text())
    assert settings["fp16"] is False and settings["lr_scheduler_type"] == "cosine" and settings["packing"] is False
    assert settings["dataset"] == "my_alpaca,my_sharegpt" and settings["lora_rank"] == 8


@pytest.mark.parametrize("flag,expected", [("True", "all"), ("False", "no")])
def test_include_num_input_tokens_seen_true_false(tmp_path, flag, expected):
    from tunery.config import load_config

    cfg, _ = load_config("train", ["--include_num_input_tokens_seen", flag, "--output_dir", str(tmp_path)])
    assert cfg.training.include_num_input_tokens_seen == expected


def test_deepspeed_without_the_package_is_one_clear_error(tiny_chatml_model, data_dir, tmp_path):
    # make test installs deepspeed: a package of that name that fails to import hides it from this run
    blocker = tmp_path / "hide" / "deepspeed"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text('raise ImportError("No module named \'deepspeed\' (hidden by the test)")\n')
    ds_config = tmp_path / "cache" / "ds_z3_config.json"
    ds_config.parent.mkdir()
    ds_config.write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    result = cli(*train_tokens(tiny_chatml_model, data_dir, tmp_path / "out"), "--deepspeed", str(ds_config),
                 env={"PYTHONPATH": os.pathsep.join([str(blocker.parent), str(REPO / "src")])})
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("tunery: error:")]
    assert len(errors) == 1 and "deepspeed" in errors[0]
    assert not (tmp_path / "out").exists()  # refused before anything was loaded or written


def test_resume_from_checkpoint_into_a_new_output_dir(trained, tiny_chatml_model, data_dir, tmp_path):
    new_dir = tmp_path / "new_dir"
    checkpoint = trained["out"] / "checkpoint-1"
    with tunery_logs() as logs:
        code = tunery(train_tokens(tiny_chatml_model, data_dir, new_dir, "--max_steps", "3",
                                   "--resume_from_checkpoint", str(checkpoint)))
    assert code == 0
    assert f"resuming from {checkpoint}" in messages_of(logs)
    log = read_jsonl(new_dir / "trainer_log.jsonl")
    assert [row["current_steps"] for row in log] == [2, 3]  # continued after step 1, not from step 0
    state = json.loads((new_dir / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    assert (new_dir / "adapter_model.safetensors").is_file()


def test_rerun_resumes_from_the_newest_checkpoint_automatically(trained, tiny_chatml_model, data_dir, tmp_path):
    """An interrupted run (checkpoints, no final results): the same command again picks up the newest one."""
    out = tmp_path / "interrupted"
    out.mkdir()
    for name in ("checkpoint-1", "checkpoint-2"):
        shutil.copytree(trained["out"] / name, out / name)
    with tunery_logs() as logs:
        code = tunery(train_tokens(tiny_chatml_model, data_dir, out, "--max_steps", "3"))
    assert code == 0
    assert f"resuming from {out / 'checkpoint-2'}" in messages_of(logs)
    assert [row["current_steps"] for row in read_jsonl(out / "trainer_log.jsonl")] == [3]
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 3


def test_do_train_false_with_do_eval_evaluates_only(trained, tiny_chatml_model, data_dir, tmp_path):
    """The tutorial's note on --do_train: True trains, False evaluates (here: eval loss of the adapter)."""
    out = tmp_path / "eval_only"
    code = tunery(["train", "--stage", "sft", "--do_train", "False", "--do_eval", "True",
                   "--model_name_or_path", str(tiny_chatml_model), "--adapter_name_or_path", str(trained["out"]),
                   "--finetuning_type", "lora", "--template", "qwen", "--dataset_dir", str(data_dir),
                   "--eval_dataset", "my_alpaca", "--cutoff_len", "128", "--max_samples", "4",
                   "--per_device_eval_batch_size", "2", "--report_to", "none", "--output_dir", str(out)])
    assert code == 0
    assert json.loads((out / "eval_results.json").read_text())["eval_loss"] > 0
    assert not (out / "adapter_model.safetensors").exists() and not list(out.glob("checkpoint-*"))


def test_do_train_false_alone_does_not_train(tiny_chatml_model, data_dir, tmp_path):
    out = tmp_path / "nothing"
    tokens = train_tokens(tiny_chatml_model, data_dir, out, "--max_steps", "1")
    tokens[tokens.index("--do_train") + 1] = "False"
    code = tunery(tokens)
    assert code == 2
    assert not (out / "adapter_model.safetensors").exists()


@pytest.mark.parametrize("stage,datasets,extra", [
    ("pt", "my_pt", []),
    ("rm", "my_pref_alpaca,my_pref_sharegpt", []),
    ("dpo", "my_pref_alpaca,my_pref_sharegpt", ["--pref_beta", "0.1"]),
])
def test_other_stages_train_on_the_tutorial_formats(tiny_chatml_model, data_dir, tutorial_env, tmp_path,
                                                    stage, datasets, extra):
    out = tmp_path / stage
    tokens = train_tokens(tiny_chatml_model, data_dir, out, *extra)
    tokens[tokens.index("--stage") + 1] = stage
    tokens[tokens.index("--dataset") + 1] = datasets
    assert tunery(tokens) == 0
    assert (out / "adapter_model.safetensors").is_file()
    assert [row["current_steps"] for row in read_jsonl(out / "trainer_log.jsonl")] == [1, 2]


# ---------------------------------------------------------------------------------------------
# Section 5: benchmark evaluation (`eval`) by YAML and by flags
# ---------------------------------------------------------------------------------------------
EVAL_YAML = """\
### model
model_name_or_path: {model}
adapter_name_or_path: {adapter}
trust_remote_code: true

### method
finetuning_type: lora

### dataset
task: {task}
template: fewshot
lang: en
n_shot: 5

### output
save_dir: {save_dir}

### eval
batch_size: 4
"""


def write_eval_yaml(path: Path, model: Path, adapter: Path, task: str, save_dir: Path) -> Path:
    path.write_text(EVAL_YAML.format(model=model, adapter=adapter, task=task, save_dir=save_dir), encoding="utf-8")
    return path


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("tunery: error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_eval_yaml_mmlu_offline_is_one_clear_error(trained, tiny_chatml_model, tmp_path):
    config = write_eval_yaml(tmp_path / "llama3_lora_eval.yaml", tiny_chatml_model, trained["out"], "mmlu_test",
                             tmp_path / "eval")
    result = cli("eval", str(config), env={"HF_HUB_OFFLINE": "1", "TUNERY_CACHE": str(tmp_path / "cache")})
    error = one_error_line(result)
    assert "mmlu" in error and "offline" in error
    assert not (tmp_path / "eval").exists()


@pytest.mark.parametrize("split_args", [[], ["--split", "validation"]])
def test_eval_flags_mmlu_offline_is_one_clear_error(tiny_chatml_model, tmp_path, monkeypatch, capsys, split_args):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TUNERY_CACHE", str(tmp_path / "cache"))
    code = tunery(["eval", "--model_name_or_path", str(tiny_chatml_model), "--template", "fewshot", "--task",
                   "mmlu_test", *split_args, "--lang", "en", "--n_shot", "5", "--batch_size", "1"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tunery: error:")]
    assert code == 2 and len(errors) == 1
    assert "mmlu" in errors[0] and "offline" in errors[0]


def test_eval_mmlu_with_the_hub_unreachable_is_one_clear_error(tiny_chatml_model, tmp_path):
    """No internet and HF_HUB_OFFLINE unset (the usual case on an air-gapped machine)."""
    env = {"HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9",
           "TUNERY_CACHE": str(tmp_path / "cache")}
    result = cli("eval", "--model_name_or_path", str(tiny_chatml_model), "--template", "fewshot", "--task",
                 "mmlu_test", "--split", "validation", "--lang", "en", "--n_shot", "5", "--batch_size", "1", env=env)
    error = one_error_line(result)
    assert "could not download task 'mmlu'" in error
    assert "downloaded 0 subjects" not in result.stderr


def test_eval_yaml_on_the_packaged_sample_task(trained, tiny_chatml_model, tutorial_env, tmp_path, capsys):
    """The tutorial's eval YAML with the offline task Tunery ships in place of mmlu_test."""
    save_dir = tmp_path / "saves" / "lora" / "eval"
    config = write_eval_yaml(tmp_path / "eval.yaml", tiny_chatml_model, trained["out"], "sample_en_test", save_dir)
    assert tunery(["eval", str(config), "--max_samples", "1"]) == 0
    assert "Average" in capsys.readouterr().out
    results = json.loads((save_dir / "results.json").read_text())
    settings = results["settings"]
    assert (settings["task"], settings["split"], settings["n_shot"], settings["lang"], settings["template"]) == (
        "sample_en", "test", 5, "en", "fewshot")
    assert settings["adapters"] == [str(trained["out"])] and settings["batch_size"] == 4
    rows = read_jsonl(save_dir / "predictions.jsonl")
    assert len(rows) == 4  # one question per subject (max_samples 1), four subjects
    assert all(r["n_shot"] == 5 and r["predicted"] in "ABCD" and r["gold"] in "ABCD" for r in rows)
    # five worked examples before the question, each ending with its answer
    assert rows[0]["prompt"].count("Answer:") == 6
    assert (save_dir / "results.log").is_file()


MMLU_STYLE = [  # no header, question, four choices, answer: the MMLU CSV layout
    ["1 + 1 = ?", "1", "2", "3", "4", "B"],
    ["2 + 2 = ?", "4", "5", "6", "7", "A"],
    ["3 + 3 = ?", "5", "7", "6", "9", "C"],
]


def write_task(root: Path) -> Path:
    import csv

    for split in ("dev", "val", "test"):
        (root / "mytask" / split).mkdir(parents=True)
        with (root / "mytask" / split / f"arithmetic_{split}.csv").open("w", newline="") as f:
            rows = MMLU_STYLE if split != "test" else MMLU_STYLE[::-1]
            csv.writer(f).writerows([[f"[{split}] {r[0]}", *r[1:]] for r in rows])
    return root


@pytest.mark.parametrize("template,split_args,split", [
    ("qwen", [], "test"),  # the "chat model" line: the model's own template
    ("fewshot", ["--split", "validation"], "validation"),  # the "base model" line
])
def test_eval_flags_chat_and_base_model(tiny_chatml_model, tutorial_env, tmp_path, template, split_args, split):
    task_dir = write_task(tmp_path / "evaluation")
    save_dir = tmp_path / "eval"
    code = tunery(["eval", "--model_name_or_path", str(tiny_chatml_model), "--template", template,
                   "--task", "mytask_test", "--task_dir", str(task_dir), *split_args, "--lang", "en",
                   "--n_shot", "2", "--batch_size", "1", "--save_dir", str(save_dir)])
    assert code == 0
    results = json.loads((save_dir / "results.json").read_text())
    assert results["settings"]["split"] == split and results["settings"]["template"] == template
    rows = read_jsonl(save_dir / "predictions.jsonl")
    tag = "[val]" if split == "validation" else "[test]"
    assert len(rows) == 3 and all(r["question"].startswith(tag) for r in rows)
    assert all("[dev]" in r["prompt"] and r["n_shot"] == 2 for r in rows)
    if template == "qwen":  # a chat template wraps the few-shot prompt in the model's turns
        assert "<|im_start|>user" in rows[0]["prompt"]
    else:
        assert "<|im_start|>" not in rows[0]["prompt"]


# ---------------------------------------------------------------------------------------------
# Section 5 (2): batch prediction on a dataset, with BLEU/ROUGE per sample
# ---------------------------------------------------------------------------------------------
def predict_tokens(model: Path, adapter: Path, data: Path, out: Path, eval_dataset: str) -> list[str]:
    """The tutorial's first batch prediction line, at test size."""
    return [
        "train",
        "--stage", "sft",
        "--do_predict",
        "--model_name_or_path", str(model),
        "--adapter_name_or_path", str(adapter),
        "--eval_dataset", eval_dataset,
        "--dataset_dir", str(data),
        "--template", "qwen",
        "--finetuning_type", "lora",
        "--output_dir", str(out),
        "--overwrite_cache",
        "--overwrite_output_dir",
        "--cutoff_len", "256",
        "--preprocessing_num_workers", "2",
        "--per_device_eval_batch_size", "1",
        "--max_samples", "2",
        "--predict_with_generate", "True",
        "--max_new_tokens", "6",  # test size; the tutorial generates up to the default 1024
    ]


@pytest.fixture(scope="module")
def predicted(trained, tiny_chatml_model, reference_dir, tutorial_env, tmp_path_factory):
    """Batch prediction over the LLaMA-Factory demo datasets (Chinese and English), with the trained adapter."""
    out = tmp_path_factory.mktemp("saves") / "lora" / "predict"
    code = tunery(predict_tokens(tiny_chatml_model, trained["out"], reference_dir / "lf" / "data", out,
                                 "alpaca_zh_demo,identity"))
    return {"code": code, "out": out}


def test_batch_prediction_writes_predictions_and_scores(predicted):
    out = predicted["out"]
    assert predicted["code"] == 0
    rows = read_jsonl(out / "generated_predictions.jsonl")
    assert len(rows) == 4  # max_samples 2 of each of the two eval datasets
    for row in rows:
        assert row["prompt"].endswith("<|im_start|>assistant\n") and isinstance(row["predict"], str)
        assert row["label"]  # the reference answer, next to what the model said
        # the tutorial's question "each sample's own BLEU and ROUGE": they are in every row
        assert set(row["scores"]) == {"bleu-4", "rouge-1", "rouge-2", "rouge-l"}
        assert all(0.0 <= v <= 100.0 for v in row["scores"].values())
    results = json.loads((out / "all_results.json").read_text())
    for key in ("bleu-4", "rouge-1", "rouge-2", "rouge-l"):  # the corpus score is the mean of the samples'
        mean = sum(r["scores"][key] for r in rows) / len(rows)
        assert results[f"predict_{key}"] == pytest.approx(mean, abs=1e-3)
    assert results["predict_samples"] == 4


def test_batch_prediction_writes_run_settings_and_log(predicted):
    out = predicted["out"]
    settings = yaml.safe_load((out / "training_args.yaml").read_text())
    assert settings["do_predict"] is True and settings["eval_dataset"] == "alpaca_zh_demo,identity"
    log = read_jsonl(out / "trainer_log.jsonl")
    assert log and log[-1]["current_steps"] == log[-1]["total_steps"]


def test_batch_evaluation_4bit_variant(trained, tiny_chatml_model, data_dir, tutorial_env, tmp_path, monkeypatch):
    """The tutorial's second line: bitsandbytes 4-bit base, sampling settings, --do_predict True,
    plus its out-of-memory advice (--eval_accumulation_steps 1, --per_device_eval_batch_size 1)."""
    import tunery.model.loader as loader

    seen = []
    real = loader.quantization_config
    monkeypatch.setattr(loader, "quantization_config", lambda *args: seen.append(real(*args)) or seen[-1])
    out = tmp_path / "eval_2024-08-24-10-42-52"
    code = tunery([
        "train", "--stage", "sft", "--model_name_or_path", str(tiny_chatml_model),
        "--preprocessing_num_workers", "2", "--finetuning_type", "lora",
        "--quantization_method", "bitsandbytes", "--template", "qwen", "--flash_attn", "auto",
        "--dataset_dir", str(data_dir), "--eval_dataset", "my_alpaca,my_sharegpt", "--cutoff_len", "256",
        "--max_samples", "1", "--per_device_eval_batch_size", "1", "--eval_accumulation_steps", "1",
        "--predict_with_generate", "True", "--max_new_tokens", "6", "--top_p", "0.7", "--temperature", "0.95",
        "--output_dir", str(out), "--do_predict", "True", "--adapter_name_or_path", str(trained["out"]),
        "--quantization_bit", "4",
    ])
    assert code == 0
    assert seen and seen[0].load_in_4bit  # the base was loaded in 4 bit through bitsandbytes
    rows = read_jsonl(out / "generated_predictions.jsonl")
    assert [r["label"] for r in rows] == ["0", "It is 21 degrees in Paris."]
    assert "predict_bleu-4" in json.loads((out / "all_results.json").read_text())


# ---------------------------------------------------------------------------------------------
# Section 6: troubleshooting
# ---------------------------------------------------------------------------------------------
def test_custom_metric_from_the_command_line(tiny_chatml_model, data_dir, tutorial_env, tmp_path):
    plugin = tmp_path / "my_metric.py"
    plugin.write_text("def length_ratio(prediction, label):\n"
                      "    return {'length_ratio': len(prediction) / max(1, len(label))}\n")
    out = tmp_path / "predict"
    code = tunery(["predict", "--model_name_or_path", str(tiny_chatml_model), "--eval_dataset", "my_alpaca",
                   "--dataset_dir", str(data_dir), "--template", "qwen", "--output_dir", str(out),
                   "--max_samples", "1", "--max_new_tokens", "4", "--metrics", "bleu,rouge,f1",
                   "--compute_metrics", f"{plugin}:length_ratio"])
    assert code == 0
    row = read_jsonl(out / "generated_predictions.jsonl")[0]
    assert {"bleu-4", "rouge-l", "f1", "length_ratio"} <= set(row["scores"])


def test_matching_template_renders_like_the_model_own(tiny_chatml_model, tmp_path, capsys):
    """Chat that never stops: the template must end turns with the model's own end-of-turn token."""
    messages = tmp_path / "messages.json"
    messages.write_text(json.dumps([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]))

    def render(template: str) -> str:
        assert tunery(["data", "render", "--template", template, "--model_name_or_path", str(tiny_chatml_model),
                       "--messages", str(messages)]) == 0
        return capsys.readouterr().out

    own = render("auto")
    assert own.endswith("<|im_start|>assistant\nHello<|im_end|>\n")
    assert render("llama3") != own  # the wrong family: its stop word never appears in this model's replies

    from tunery.config import ModelArguments
    from tunery.data.template import get_template
    from tunery.model.loader import load_tokenizer

    tok = load_tokenizer(ModelArguments(model_name_or_path=str(tiny_chatml_model)))
    assert tok.convert_tokens_to_ids("<|im_end|>") in get_template("auto", tok).stop_token_ids(tok)


def test_wrong_template_is_reported_before_chat(tiny_chatml_model, tutorial_env):
    with tunery_logs() as logs:
        code = tunery(["chat", "--model_name_or_path", str(tiny_chatml_model), "--template", "llama3",
                       "--query", "Hi", "--max_new_tokens", "2"])
    assert code == 0
    assert "llama3" in messages_of(logs) and "chat template" in messages_of(logs)
