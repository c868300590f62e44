"""docs/multimodal.md's worked examples (image, video, audio) run as written: the dataset_info entry and
data row, the training YAML, then the chat, predict and api commands and the curl request body, with
the tiny model of the same family in place of the hub model (and one training step, two new tokens)."""

from __future__ import annotations

import base64
import json
import re
import shlex
import wave
from pathlib import Path

import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient
from PIL import Image

from tunery.api.app import create_app
from tunery.cli import chat as chat_cmd
from tunery.cli import options
from tunery.cli import predict as predict_cmd
from tunery.config import parse_config
from tunery.inference import load_engine
from tunery.train.workflow import run_train

DOC = Path(__file__).resolve().parents[3] / "docs" / "multimodal.md"
# the section's title word -> (tiny fixture family, the hub model the docs name)
EXAMPLES = {"Image": ("llava", "llava-hf/llava-1.5-7b-hf"), "Video": ("qwen2_vl", "Qwen/Qwen2-VL-2B-Instruct"),
            "Audio": ("qwen2_audio", "Qwen/Qwen2-Audio-7B-Instruct")}
QUICK = {"max_steps": 1, "gradient_accumulation_steps": 1, "report_to": "none", "save_steps": 1000,
         "dataloader_num_workers": 0, "disable_tqdm": True, "logging_steps": 1}


def doc_blocks(title: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block in the worked example whose heading starts with ``title``."""
    section = DOC.read_text(encoding="utf-8").split("## Worked examples", 1)[1].split("\n## ", 1)[0]
    example = next(part for part in section.split("\n### ") if part.startswith(title))
    return re.findall(r"```(\w+)\n(.*?)```", example, re.S)


def make_media(data: Path, row: dict) -> None:
    """Create the files a data row names (images, frames, a 1 s WAV) under ``data``."""
    paths = list(row.get("images") or [])
    for video in row.get("videos") or []:
        paths += video if isinstance(video, list) else [video]
    for i, rel in enumerate(paths):
        target = data / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (56, 56), (30 * i, 120, 200)).save(target)
    for rel in row.get("audios") or []:
        target = data / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with wave.open(str(target), "wb") as f:
            f.setnchannels(1)
            f.setsampwidth(2)
            f.setframerate(16000)
            f.writeframes((np.sin(np.linspace(0, 300, 16000)) * 9000).astype(np.int16).tobytes())


def commands(body: str, model_id: str, model: Path) -> list[list[str]]:
    """The ``tunery ...`` lines of a bash block as argv, the hub model replaced by the tiny one."""
    lines = body.replace("\\\n", " ").splitlines()
    return [[str(model) if t == model_id else t for t in shlex.split(line)] for line in lines if line.strip()]


def curl_body(body: str) -> dict:
    """The JSON a ``curl ... -d @- <<EOF`` block sends, its ``$(base64 -w0 PATH)`` filled in."""
    text = body.split("<<EOF\n", 1)[1].rsplit("EOF", 1)[0]
    text = re.sub(r"\$\(base64 -w0 ([^)]+)\)", lambda m: base64.b64encode(Path(m.group(1)).read_bytes()).decode(),
                  text)
    return json.loads(text)


@pytest.mark.parametrize("title", list(EXAMPLES))
def test_worked_example_runs_as_written(title, tiny_vlm_factory, tmp_path, monkeypatch, capsys):
    family, model_id = EXAMPLES[title]
    model = tiny_vlm_factory(family)  # Qwen2-VL skips where torchvision is missing
    kinds = [lang for lang, _ in doc_blocks(title)]
    assert kinds == ["json", "json", "yaml", "bash", "bash"], kinds
    (_, info), (_, row), (_, train_yaml), (_, cli), (_, curl) = doc_blocks(title)
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    info = json.loads(info)
    (data / "dataset_info.json").write_text(json.dumps(info))
    row = json.loads(row)
    (data / next(iter(info.values()))["file_name"]).write_text(json.dumps([row, row]))
    make_media(data, row)

    raw = yaml.safe_load(train_yaml)
    assert raw["model_name_or_path"] == model_id
    run_train(parse_config("train", {**raw, "model_name_or_path": str(model), **QUICK}))
    assert (tmp_path / raw["output_dir"] / "adapter_config.json").is_file()

    runs = commands(cli, model_id, model)
    assert [argv[:2] for argv in runs] == [["tunery", "chat"], ["tunery", "predict"], ["tunery", "api"]]
    quick = ["--max_new_tokens", "2", "--do_sample", "false"]
    assert chat_cmd.main(runs[0][2:] + quick) == 0
    assert predict_cmd.main(runs[1][2:] + quick) == 0
    output_dir = runs[1][runs[1].index("--output_dir") + 1]
    predictions = (tmp_path / output_dir / "generated_predictions.jsonl").read_text().splitlines()
    assert len(predictions) == 2 and json.loads(predictions[0])["label"] == row["messages"][-1]["content"]

    engine = load_engine(options.load("api", runs[2][2:] + quick, hint=""))
    request = curl_body(curl)
    with TestClient(create_app(engine)) as client:
        response = client.post("/v1/chat/completions", json=request)
    assert response.status_code == 200, response.text
    text = "".join(part.get("text", "") for part in request["messages"][0]["content"])
    text_only = len(engine.prompt_ids([{"role": "user", "content": text}]))
    assert response.json()["usage"]["prompt_tokens"] > text_only  # the media's tokens are in the prompt
