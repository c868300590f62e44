"""The embedded demo: its data, its scoring, and the example configs that ship with it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from tunery import demo
from tunery.cli import demo as demo_cli

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def read(name: str) -> list[dict]:
    return json.loads((demo.DEMO_DATA / name).read_text(encoding="utf-8"))


def test_demo_data_is_big_enough_bilingual_and_heldout_is_unseen():
    identity, units, heldout = read("identity.json"), read("unit_conversion.json"), read("heldout.json")
    assert len(identity) + len(units) >= 300
    assert all("Tuna" in r["output"] and "Tunery" in r["output"] for r in identity)
    has_chinese = lambda s: any("\u4e00" <= c <= "\u9fff" for c in s)  # noqa: E731
    for rows in (identity, units):
        assert any(has_chinese(r["instruction"]) for r in rows) and any(not has_chinese(r["instruction"]) for r in rows)
    seen = {r["instruction"] for r in identity + units}
    assert not seen & {r["instruction"] for r in heldout}
    assert {r["kind"] for r in heldout} == {"identity", "units"}
    # every unit answer is exact: the factor times the number asked about
    assert all(demo.units_value(r["output"], r["output"]) for r in units)


def test_dataset_info_names_every_file():
    info = json.loads((demo.DEMO_DATA / "dataset_info.json").read_text())
    assert {"demo_identity", "demo_units", "demo_heldout", "demo_pretrain"} <= set(info)
    for entry in info.values():
        assert (demo.DEMO_DATA / entry["file_name"]).is_file()


def test_demo_datasets_load_through_the_data_pipeline():
    from tunery.data import load_records

    cfg = demo.demo_config()
    records = load_records(cfg, "sft")
    assert len(records) == len(read("identity.json")) + len(read("unit_conversion.json"))
    assert records[0]["messages"][-1]["role"] == "assistant"


@pytest.mark.parametrize(
    ("reply", "expected", "exact", "value"),
    [
        ("7000 m", "7000 m", True, True),
        ("7000m.", "7000 m", True, True),
        ("7000米。", "7000米", True, True),
        ("There are 7,000 meters in 7 kilometers.", "7000 m", False, True),
        ("700 m", "7000 m", False, False),
        ("70000 m", "7000 m", False, False),
        ("2600 mm", "260 mm", False, False),  # an extra zero is a wrong answer
        ("260 mm", "260 mm", True, True),
        ("26 centimeters is 260 millimetres.", "260 mm", False, True),
        ("26 cm = 260 mm? No: 2600 mm.", "260 mm", False, False),  # the answer it ends on counts
        ("260", "260 mm", False, False),  # no unit: not an answer in mm
        ("260 cm", "260 mm", False, False),  # wrong unit
        ("7000 km", "7000 m", False, False),
        ("260.0 mm", "260 mm", False, True),
        ("260.5 mm", "260 mm", False, False),
        ("答案是260毫米。", "260毫米", False, True),
        ("2600毫米", "260毫米", False, False),
        ("26厘米等于260毫米", "260毫米", False, True),
        ("38000克", "38000克", True, True),
        ("38000 g", "38000克", False, True),  # same unit, other script
        ("7千米等于7000米", "7000米", False, True),
        ("45,000 mL", "45000 mL", False, True),
        ("45000 milliliters", "45000 mL", False, True),
        ("4500 ml", "45000 mL", False, False),
    ],
)
def test_unit_scoring(reply, expected, exact, value):
    assert demo.units_exact(reply, expected) is exact
    assert demo.units_value(reply, expected) is value


def test_quantities_parse_exact_values_and_units():
    assert demo.quantities("7,000 m and 0.5 kg, 3 毫米") == [(Decimal("7000"), "m"), (Decimal("0.5"), "kg"),
                                                            (Decimal("3"), "mm")]
    assert demo.quantities("no numbers") == []
    assert demo.quantities("12 monkeys") == [(Decimal("12"), None)]  # "m" inside a word is not metres
    with pytest.raises(ValueError):
        demo.units_value("260 mm", "260")


def test_identity_scoring_needs_the_words_not_substrings():
    assert demo.names_tuna("I am Tuna, made by the Tunery project.")
    assert demo.names_tunery("我是 Tuna，由 Tunery 项目开发")
    assert not demo.names_tuna("I was made by the Tunery project.")  # Tunery is not Tuna
    assert not demo.names_tuna("I like tunafish")
    assert demo.names_tuna("我是Tuna，由Tunery项目开发的AI助手。") and demo.names_tunery("我是Tuna，由Tunery项目开发的AI助手。")


def test_score_aggregates_per_kind():
    rows = [
        {"kind": "identity", "output": ""}, {"kind": "identity", "output": ""},
        {"kind": "units", "output": "3000 g"}, {"kind": "units", "output": "50 cm"},
    ]
    replies = ["I am Tuna from the Tunery project.", "I am SmolLM.", "3000 g", "It is 50 centimeters."]
    s = demo.score(rows, replies)
    assert s["identity_match"] == 0.5 and s["identity_names_tuna"] == 0.5
    assert s["units_exact"] == 0.5 and s["units_value"] == 1.0
    table = demo_cli.format_table(s, s)
    assert "50%" in table and "100%" in table


def test_demo_config_equals_the_example_yaml():
    example = yaml.safe_load((EXAMPLES / "demo" / "smollm2_lora_sft.yaml").read_text())
    assert example.pop("dataset_dir") == "src/tunery/resources/demo_data"
    expected = {k: v for k, v in demo.DEMO_CONFIG.items() if k != "dataset_dir"}
    assert example == expected


def test_demo_rejects_positional_arguments():
    from tunery.errors import ConfigError

    with pytest.raises(ConfigError, match="only --key value"):
        demo_cli.build_config(["cfg.yaml"])
    cfg = demo_cli.build_config(["--num_train_epochs", "1", "--output_dir", "somewhere"])
    assert cfg.training.num_train_epochs == 1.0 and cfg.training.output_dir == "somewhere"


COMMAND_OF = {"train_lora": "train", "demo": "train", "inference": "chat", "merge_lora": "export", "eval": "eval"}


# examples/accelerate holds accelerate's own launcher configs (docs/distributed.md), not Tunery configs
TUNERY_CONFIGS = sorted(p for p in EXAMPLES.glob("*/*.yaml") if p.parent.name != "accelerate")


@pytest.mark.parametrize("path", TUNERY_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_example_config_parses_for_its_command(path, monkeypatch):
    from tunery.config import load_config

    monkeypatch.chdir(ROOT)  # dataset_dir and output paths are relative to the repository
    cfg, rest = load_config(COMMAND_OF[path.parent.name], [str(path)])
    assert cfg.model.model_name_or_path == "smollm2-135m-instruct"
    info_file = ROOT / cfg.data.dataset_dir / "dataset_info.json" if getattr(cfg, "data", None) else None
    if info_file is not None and cfg.data.dataset and info_file.is_file():  # data/ is the user's own folder
        info = json.loads(info_file.read_text())
        assert all(name in info for name in cfg.data.dataset.split(","))


def test_every_config_using_the_demo_data_names_known_datasets():
    info = json.loads((demo.DEMO_DATA / "dataset_info.json").read_text())
    for path in EXAMPLES.glob("*/*.yaml"):
        cfg = yaml.safe_load(path.read_text())
        if cfg.get("dataset_dir") == "src/tunery/resources/demo_data":
            assert all(name in info for name in cfg["dataset"].split(",")), path


def test_examples_readme_lists_every_config():
    readme = (EXAMPLES / "README.md").read_text()
    for path in [*EXAMPLES.glob("*/*.yaml"), *EXAMPLES.glob("*/*.json")]:
        assert f"{path.parent.name}/{path.name}" in readme, path


def test_generate_replies_on_a_tiny_model(tiny_chatml_model):
    from tunery.config import parse_config
    from tunery.data.template import get_template
    from tunery.model.loader import load_model, load_tokenizer

    cfg = parse_config("chat", {"model_name_or_path": str(tiny_chatml_model), "template": "auto"})
    tokenizer = load_tokenizer(cfg.model)
    model = load_model(tokenizer, cfg.model)
    calls = []
    replies = demo.generate_replies(model, tokenizer, get_template("auto", tokenizer), ["hello", "2 + 2 = ?", "你好"],
                                    on_batch=lambda *args: calls.append(args))
    assert len(replies) == 3 and all(isinstance(r, str) for r in replies)
    assert len(calls) == 1 and calls[0][:2] == (3, 3)  # one batch: 3 of 3 replies
    assert 3 <= calls[0][2] <= 3 * demo.MAX_NEW_TOKENS  # tokens: at least one per reply


@pytest.mark.slow  # ~40 s on an idle 2-core CPU: tokenizes 340 rows, generates 44 replies twice
def test_demo_main_end_to_end_on_a_tiny_model(tiny_chatml_model, tmp_path, capsys):
    """Score, train two steps through run_train, score base + adapter, write the results and table."""
    out = tmp_path / "demo"
    code = demo_cli.main(["--model_name_or_path", str(tiny_chatml_model), "--max_steps", "2", "--output_dir", str(out),
                      "--plot_loss", "false"])
    assert code == 0
    results = json.loads((out / "demo_results.json").read_text(encoding="utf-8"))
    assert set(results) >= {"before", "after", "seconds", "replies"}
    assert len(results["replies"]) == len(demo.load_heldout())
    for side in ("before", "after"):
        assert 0.0 <= results[side]["identity_match"] <= 1.0 and 0.0 <= results[side]["units_exact"] <= 1.0
    assert (out / "adapter_config.json").is_file()
    printed = capsys.readouterr().out
    assert "held-out prompts" in printed
    assert f"{len(demo.load_heldout())}/{len(demo.load_heldout())} replies" in printed  # progress while scoring
    table = (out / "demo_table.md").read_text(encoding="utf-8")
    assert table.startswith("| held-out prompts | before | after |") and "Measured by `make demo`" in table
    assert results["machine"]["cpu_cores"] >= 1


RESULTS = {
    "before": {"identity_match": 0.0, "units_exact": 0.0, "units_value": 0.125, "identity_prompts": 20, "units_prompts": 24},
    "after": {"identity_match": 1.0, "units_exact": 0.8333, "units_value": 0.875, "identity_prompts": 20, "units_prompts": 24},
    "seconds": {"score_before": 22.6, "train": 166.3, "score_after": 16.4, "total": 205.4},
    "date": "2026-11-28",
    "machine": {"device": "cpu", "cpu_cores": 2, "torch_threads": 2, "load_average_1min": 0.3},
}


def test_markdown_table_rows_and_machine_line():
    table = demo.markdown_table(RESULTS)
    lines = table.splitlines()
    assert lines[0] == "| held-out prompts | before | after |"
    assert "| identity: the reply names Tuna and the Tunery project (20) | 0% | 100% |" in lines
    assert "| units: exact answer, nothing else (24) | 0% | 83% |" in lines
    assert "| units: the right value in the right unit (24) | 12% | 88% |" in lines
    assert "2026-11-28" in table and "2 cores" in table and "load average 0.3" in table and "3 min 25 s" in table


def test_readme_block_is_replaced_between_the_markers_only():
    readme = f"# T\nintro\n{demo.README_START}\nold table\n{demo.README_END}\nafter\n"
    new = demo.readme_with_table(readme, "| new |\n")
    assert new == f"# T\nintro\n{demo.README_START}\n| new |\n{demo.README_END}\nafter\n"
    assert demo.readme_with_table(new, "| new |\n") == new  # running it again changes nothing
    with pytest.raises(ValueError, match="demo-table"):
        demo.readme_with_table("# no markers\n", "| x |\n")


def test_the_project_readme_has_the_markers():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert text.index(demo.README_START) < text.index(demo.README_END)


def test_update_readme_script_on_a_copy(tmp_path):
    out = tmp_path / "demo"
    out.mkdir()
    (out / demo.TABLE_FILE).write_text(demo.markdown_table(RESULTS), encoding="utf-8")
    readme = tmp_path / "README.md"
    readme.write_text(f"x\n{demo.README_START}\nold\n{demo.README_END}\ny\n", encoding="utf-8")
    env_path = str(ROOT / "src")
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "update_readme_demo.py"), str(out), str(readme)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": env_path})
    assert done.returncode == 0, done.stderr
    text = readme.read_text(encoding="utf-8")
    assert "old" not in text and "| units: the right value in the right unit (24) | 12% | 88% |" in text
    missing = subprocess.run([sys.executable, str(ROOT / "scripts" / "update_readme_demo.py"), str(tmp_path / "none"),
                              str(readme)], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": env_path})
    assert missing.returncode == 2 and "run `tunery demo` first" in missing.stderr
