"""The embedded demo: its data, its scoring, and the example configs that ship with it."""

from __future__ import annotations

import json
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
    assert all(demo.units_lenient(r["output"], r["output"]) for r in units)


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
    ("reply", "expected", "exact", "lenient"),
    [
        ("7000 m", "7000 m", True, True),
        ("7000m.", "7000 m", True, True),
        ("7000米。", "7000米", True, True),
        ("There are 7,000 meters in 7 kilometers.", "7000 m", False, True),
        ("700 m", "7000 m", False, False),
        ("70000 m", "7000 m", False, False),
    ],
)
def test_unit_scoring(reply, expected, exact, lenient):
    assert demo.units_exact(reply, expected) is exact
    assert demo.units_lenient(reply, expected) is lenient


def test_identity_scoring_needs_the_words_not_substrings():
    assert demo.names_tuna("I am Tuna, made by the Tunery project.")
    assert demo.names_tunery("我是 Tuna，由 Tunery 项目开发")
    assert not demo.names_tuna("I was made by the Tunery project.")  # Tunery is not Tuna
    assert not demo.names_tuna("I like tunafish")


def test_score_aggregates_per_kind():
    rows = [
        {"kind": "identity", "output": ""}, {"kind": "identity", "output": ""},
        {"kind": "units", "output": "3000 g"}, {"kind": "units", "output": "50 cm"},
    ]
    replies = ["I am Tuna from the Tunery project.", "I am SmolLM.", "3000 g", "It is 50 centimeters."]
    s = demo.score(rows, replies)
    assert s["identity_match"] == 0.5 and s["identity_names_tuna"] == 0.5
    assert s["units_exact"] == 0.5 and s["units_lenient"] == 1.0
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


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.name}")
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
    for path in EXAMPLES.glob("*/*.yaml"):
        assert f"{path.parent.name}/{path.name}" in readme, path


def test_generate_replies_on_a_tiny_model(tiny_chatml_model):
    from tunery.config import parse_config
    from tunery.data.template import get_template
    from tunery.model.loader import load_model, load_tokenizer

    cfg = parse_config("chat", {"model_name_or_path": str(tiny_chatml_model), "template": "auto"})
    tokenizer = load_tokenizer(cfg.model)
    model = load_model(tokenizer, cfg.model)
    replies = demo.generate_replies(model, tokenizer, get_template("auto", tokenizer), ["hello", "2 + 2 = ?", "你好"])
    assert len(replies) == 3 and all(isinstance(r, str) for r in replies)


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
    assert "held-out prompts" in capsys.readouterr().out
