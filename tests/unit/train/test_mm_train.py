"""Training a vision-language model on LLaMA-Factory's mllm_demo: loss, adapter reload, freeze_* settings."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from transformers import TrainerCallback

from tests.fixtures import tiny_llava as llava_fixtures
from tests.unit.train_utils import train_config
from tunery.data.collator import MediaCollator, PaddedCollator
from tunery.data.media import MediaEncoder, MediaSettings
from tunery.data.processors import ProcessSettings, process_batch
from tunery.data.template import get_template
from tunery.model.adapter import multimodal_parts
from tunery.model.loader import load_model, load_tokenizer
from tunery.model.multimodal import load_processor
from tunery.train.workflow import run_train

llava4 = llava_fixtures.llava4  # the shared fixture (tests/fixtures/tiny_llava.py)
mllm_dir = llava_fixtures.mllm_dir  # the shared fixture (tests/fixtures/tiny_llava.py)


def _cfg(llava4, mllm_dir, out, **overrides):
    raw = {"dataset": "mllm_demo", "dataset_dir": str(mllm_dir), "template": "auto", "cutoff_len": 512,
           "per_device_train_batch_size": 2, "overwrite_cache": True}
    raw.update(overrides)
    return train_config(llava4, out, **raw)


def _batch(llava4, mllm_dir):
    tokenizer = load_tokenizer(train_config(llava4, "unused").model)
    media = MediaEncoder(load_processor(llava4), MediaSettings())
    record = {"messages": [{"role": "user", "content": "<image>Who is he?"},
                           {"role": "assistant", "content": "He's Thomas Muller from Bayern Munich."}],
              "tools": None, "chosen": None, "rejected": None, "kto_tag": None, "videos": None, "audios": None,
              "images": [str(mllm_dir / "mllm_demo_data" / "2.jpg")], "_source": {"file": "t", "row": 0}}
    out = process_batch({k: [v] for k, v in record.items()}, stage="sft", tokenizer=tokenizer,
                        template=get_template("auto", tokenizer), settings=ProcessSettings(cutoff_len=512), media=media)
    row = {k: v[0] for k, v in out.items() if not k.startswith("_")}
    return MediaCollator(PaddedCollator(tokenizer.pad_token_id), media)([row])


class _Logits(TrainerCallback):
    """The trained model's logits on ``batch`` at the end of training (before anything is reloaded)."""

    def __init__(self, batch):
        self.batch, self.logits = batch, None

    def on_train_end(self, args, state, control, model=None, **kwargs):
        model.eval()
        with torch.no_grad():
            self.logits = model(**{k: v for k, v in self.batch.items() if k != "labels"}).logits.clone()


def test_loss_falls_on_mllm_demo(llava4, mllm_dir, tmp_path):
    """Full fine-tuning (vision tower and projector frozen by default) of the tiny LLaVA on mllm_demo as it is."""
    out = tmp_path / "full"
    run_train(_cfg(llava4, mllm_dir, out, finetuning_type="full", max_steps=40, learning_rate=1e-3))
    losses = [r["loss"] for r in map(json.loads, open(out / "trainer_log.jsonl")) if "loss" in r]
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < 0.9 * sum(losses[:5]) / 5, losses


def test_lora_adapter_reloads_to_identical_logits(llava4, mllm_dir, tmp_path):
    out = tmp_path / "run"
    cfg = _cfg(llava4, mllm_dir, out, max_steps=8, learning_rate=5e-2, lora_rank=8)
    probe = _Logits(_batch(llava4, mllm_dir))
    run_train(cfg, callbacks=[probe])
    adapter = json.load(open(out / "adapter_config.json"))
    assert not any("vision_tower" in t or "multi_modal_projector" in t for t in adapter["target_modules"])
    assert any("language_model" in t for t in adapter["target_modules"])

    reload_cfg = train_config(llava4, tmp_path / "unused", adapter_name_or_path=str(out))
    tokenizer = load_tokenizer(reload_cfg.model)
    reloaded = load_model(tokenizer, reload_cfg.model, reload_cfg.finetuning)
    base = load_model(tokenizer, train_config(llava4, tmp_path / "unused").model)
    inputs = {k: v for k, v in probe.batch.items() if k != "labels"}
    with torch.no_grad():
        logits, base_logits = reloaded(**inputs).logits, base(**inputs).logits
    assert torch.allclose(logits, probe.logits, atol=1e-5)
    assert not torch.allclose(base_logits, probe.logits, atol=1e-3)  # the adapter changed the model


def _trainable(model) -> dict[str, bool]:
    parts = multimodal_parts(model)
    out = {}
    for part, prefixes in parts.items():
        params = [p for n, p in model.named_parameters()
                  if any(n.startswith(x + ".") for x in prefixes) and "lora_" not in n]
        lora = [p for n, p in model.named_parameters() if any(x + "." in n for x in prefixes) and "lora_" in n]
        out[part] = any(p.requires_grad for p in params) or any(p.requires_grad for p in lora)
    return out


@pytest.mark.parametrize(("kind", "settings", "expected"), [
    ("full", {}, {"vision": False, "projector": False, "language": True}),
    ("full", {"freeze_vision_tower": False}, {"vision": True, "projector": False, "language": True}),
    ("full", {"freeze_multi_modal_projector": False, "freeze_language_model": True},
     {"vision": False, "projector": True, "language": False}),
    ("lora", {}, {"vision": False, "projector": False, "language": True}),
    ("lora", {"freeze_vision_tower": False, "freeze_multi_modal_projector": False},
     {"vision": True, "projector": True, "language": True}),
    ("freeze", {"freeze_trainable_layers": 1}, {"vision": False, "projector": False, "language": True}),
    ("freeze", {"freeze_trainable_layers": 1, "freeze_vision_tower": False},
     {"vision": True, "projector": False, "language": True}),
])
def test_freeze_settings_decide_which_parts_train(llava4, tmp_path, kind, settings, expected):
    cfg = train_config(llava4, tmp_path / "o", finetuning_type=kind, **settings)
    tokenizer = load_tokenizer(cfg.model)
    model = load_model(tokenizer, cfg.model, cfg.finetuning, is_trainable=True, training_args=cfg.training)
    assert _trainable(model) == expected


def test_freeze_method_trains_language_layers_not_vision_layers(llava4, tmp_path):
    cfg = train_config(llava4, tmp_path / "o", finetuning_type="freeze", freeze_trainable_layers=1)
    model = load_model(load_tokenizer(cfg.model), cfg.model, cfg.finetuning, is_trainable=True,
                       training_args=cfg.training)
    trained = sorted({n.split(".layers.")[0] + ".layers." + n.split(".layers.")[1].split(".")[0]
                      for n, p in model.named_parameters() if p.requires_grad and ".layers." in n})
    assert trained == ["model.language_model.layers.1"]


def test_packing_is_switched_off_with_a_notice_for_media(llava4, mllm_dir, tmp_path, caplog):
    cfg = _cfg(llava4, mllm_dir, tmp_path / "p", packing=True, max_steps=1)
    with caplog.at_level(logging.WARNING):
        run_train(cfg)
    text = caplog.text
    assert "packing is off for this vision/audio model" in text
    assert "fast_path is off for this vision/audio model" in text


def test_dry_run_counts_the_expanded_media_tokens(llava4, mllm_dir, tmp_path):
    import contextlib
    import io

    from tunery.cli import train as cli_train

    out = io.StringIO()
    tokens = ["--model_name_or_path", str(llava4), "--dataset", "mllm_demo", "--dataset_dir", str(mllm_dir),
              "--template", "auto", "--output_dir", str(tmp_path / "o"), "--dry_run", "true", "--overwrite_cache", "true"]
    with contextlib.redirect_stdout(out):
        assert cli_train.main(tokens) == 0
    text = out.getvalue()
    assert "examples after filtering: 6 train, 0 eval (0 skipped as invalid" in text
    # 8 images in mllm_demo: each <image> token becomes 4 (24 more than the text alone), none trained
    assert "tokens: 1,176 in the training set, 714 of them trained on (labels)" in text


def _preference_data(tmp_path, mllm_dir):
    """A sharegpt ranking dataset over mllm_demo's images (chosen: the demo's answer, rejected: a wrong one)."""
    import shutil

    shutil.copytree(mllm_dir / "mllm_demo_data", tmp_path / "mllm_demo_data")
    rows = [{"conversations": [{"from": "human", "value": "<image>Who is he?"}],
             "chosen": {"from": "gpt", "value": "He's Thomas Muller from Bayern Munich."},
             "rejected": {"from": "gpt", "value": "A cat on a sofa."}, "images": [f"mllm_demo_data/{i}.jpg"]}
            for i in (1, 2, 3)] * 2
    (tmp_path / "pref.json").write_text(json.dumps(rows))
    (tmp_path / "dataset_info.json").write_text(json.dumps({"mm_pref": {
        "file_name": "pref.json", "formatting": "sharegpt", "ranking": True,
        "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected", "images": "images"}}}))
    return tmp_path


def test_dpo_on_images_trains_and_the_rewards_separate(llava4, mllm_dir, tmp_path):
    data = _preference_data(tmp_path / "data", mllm_dir)
    out = tmp_path / "dpo"
    cfg = train_config(llava4, out, stage="dpo", dataset="mm_pref", dataset_dir=str(data), template="auto",
                       cutoff_len=512, per_device_train_batch_size=2, max_steps=12, learning_rate=5e-3,
                       finetuning_type="full", overwrite_cache=True)
    run_train(cfg)
    rows = [json.loads(line) for line in open(out / "trainer_log.jsonl")]
    margins = [r["rewards/margins"] for r in rows if "rewards/margins" in r]
    assert len(margins) == 12 and sum(margins[-3:]) / 3 > sum(margins[:3]) / 3 and margins[-1] > 0, margins


def test_preference_batches_carry_each_examples_images_for_chosen_and_rejected(llava4, mllm_dir):
    from datasets import Dataset

    from tunery.train.dpo import MediaPreferenceCollator
    from tunery.train.pref_common import to_pairwise_columns

    tokenizer = load_tokenizer(train_config(llava4, "unused").model)
    media = MediaEncoder(load_processor(llava4), MediaSettings())
    rows = []
    for n in (1, 2):
        record = {"messages": [{"role": "user", "content": "<image>" * n + "Who?"}], "tools": None, "kto_tag": None,
                  "chosen": {"role": "assistant", "content": "Muller."}, "rejected": {"role": "assistant", "content": "A cat."},
                  "images": [str(mllm_dir / "mllm_demo_data" / "2.jpg")] * n, "videos": None, "audios": None,
                  "_source": {"file": "t", "row": n}}
        out = process_batch({k: [v] for k, v in record.items()}, stage="dpo", tokenizer=tokenizer,
                            template=get_template("auto", tokenizer), settings=ProcessSettings(cutoff_len=512),
                            media=media)
        assert out["_status"] == [0], out["_error"]
        image_id = tokenizer.convert_tokens_to_ids("<image>")
        assert out["prompt_ids"][0].count(image_id) == 4 * n  # the images are in the shared prompt
        rows.append({k: v[0] for k, v in out.items() if not k.startswith("_")})
    dataset = to_pairwise_columns(Dataset.from_list(rows))
    assert "images" not in dataset.column_names and "media_images" in dataset.column_names
    batch = MediaPreferenceCollator(tokenizer.pad_token_id, media)(list(dataset))
    assert batch["input_ids"].shape[0] == 4 and batch["pixel_values"].shape[0] == 2 * (1 + 2)
    from transformers import LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(llava4)
    with torch.no_grad():  # image features must match the image tokens of all four rows
        assert torch.isfinite(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                    pixel_values=batch["pixel_values"], labels=batch["input_ids"]).loss)
