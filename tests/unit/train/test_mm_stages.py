"""Preference stages on a vision-language model: rm, kto, orpo/simpo, QLoRA, on the tiny LLaVA and images."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from transformers import TrainerCallback

from tests.fixtures import tiny_llava as llava_fixtures
from tests.fixtures.tiny_llava import TOKENS_PER_IMAGE
from tests.unit.train_utils import train_config
from tunery.train.workflow import run_train

llava4 = llava_fixtures.llava4  # the shared fixture (tests/fixtures/tiny_llava.py)
mllm_dir = llava_fixtures.mllm_dir


def _preference_data(root, mllm_dir):
    """A sharegpt ranking dataset over mllm_demo's images (chosen: the demo's answer, rejected: a wrong
    one; one row with two images), plus a KTO dataset of the same replies tagged good or bad."""
    shutil.copytree(mllm_dir / "mllm_demo_data", root / "mllm_demo_data")
    rows = [{"conversations": [{"from": "human", "value": "<image>Who is he?"}],
             "chosen": {"from": "gpt", "value": "He's Thomas Muller from Bayern Munich."},
             "rejected": {"from": "gpt", "value": "A cat on a sofa."}, "images": [f"mllm_demo_data/{i}.jpg"]}
            for i in (1, 2, 3)] * 2
    rows.append({"conversations": [{"from": "human", "value": "<image><image>Who are they?"}],
                 "chosen": {"from": "gpt", "value": "Kane and Gretzka."},
                 "rejected": {"from": "gpt", "value": "Two cats."}, "images": ["mllm_demo_data/1.jpg",
                                                                              "mllm_demo_data/3.jpg"]})
    (root / "pref.json").write_text(json.dumps(rows))
    kto = []
    for i in (1, 2, 3, 1, 2, 3):
        kto.append({"conversations": [{"from": "human", "value": "<image>Who is he?"},
                                      {"from": "gpt", "value": "He's Thomas Muller from Bayern Munich."}],
                    "label": True, "images": [f"mllm_demo_data/{i}.jpg"]})
        kto.append({"conversations": [{"from": "human", "value": "<image>Who is he?"},
                                      {"from": "gpt", "value": "A cat on a sofa."}],
                    "label": False, "images": [f"mllm_demo_data/{i}.jpg"]})
    (root / "kto.json").write_text(json.dumps(kto))
    (root / "dataset_info.json").write_text(json.dumps({
        "mm_pref": {"file_name": "pref.json", "formatting": "sharegpt", "ranking": True,
                    "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected",
                                "images": "images"}},
        "mm_kto": {"file_name": "kto.json", "formatting": "sharegpt",
                   "columns": {"messages": "conversations", "kto_tag": "label", "images": "images"}}}))
    return root


@pytest.fixture
def pref_dir(tmp_path, mllm_dir):
    return _preference_data(tmp_path / "data", mllm_dir)


def _cfg(llava4, pref_dir, out, stage, dataset="mm_pref", **overrides):
    raw = {"stage": stage, "dataset": dataset, "dataset_dir": str(pref_dir), "template": "auto", "cutoff_len": 512,
           "per_device_train_batch_size": 2, "max_steps": 10, "learning_rate": 5e-3, "overwrite_cache": True,
           "lora_rank": 8}
    raw.update(overrides)
    return train_config(llava4, out, **raw)


def _log(out, key):
    return [r[key] for r in map(json.loads, open(out / "trainer_log.jsonl")) if key in r]


class _FirstBatch(TrainerCallback):
    """The first training batch and the trained model's rewards on it at the end of training."""

    def __init__(self):
        self.batch, self.rewards, self.trainer = None, None, None

    def on_train_end(self, args, state, control, model=None, **kwargs):
        loader = kwargs["train_dataloader"]
        self.batch = next(iter(loader))
        model.eval()
        with torch.no_grad():
            self.rewards = model(**self.batch).logits.clone()


def _reward_batch(llava4, pref_dir):
    """A collated rm batch of the first two rows (one image each) and the two-image row."""
    from tunery.data import get_dataset
    from tunery.data.template import get_template
    from tunery.model.loader import load_tokenizer
    from tunery.train.media import media_encoder
    from tunery.train.rm import MediaRewardCollator, to_reward_columns

    cfg = _cfg(llava4, pref_dir, pref_dir / "unused", "rm")
    tokenizer = load_tokenizer(cfg.model)
    media = media_encoder(cfg)
    data = get_dataset(cfg, tokenizer, get_template("auto", tokenizer), "rm", media=media).train_dataset
    rows = to_reward_columns(data)
    picked = [rows[0], next(r for r in rows if len(r["media_images"]) == 2)]
    return tokenizer, media, MediaRewardCollator(tokenizer.pad_token_id, media)(picked), picked


def test_reward_batches_hold_each_examples_images_for_chosen_and_rejected(llava4, pref_dir):
    tokenizer, _, batch, rows = _reward_batch(llava4, pref_dir)
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.shape[0] == 4  # chosen of both rows, then rejected of both rows
    lengths = [len(rows[0]["chosen_ids"]), len(rows[1]["chosen_ids"]),
               len(rows[0]["rejected_ids"]), len(rows[1]["rejected_ids"])]
    assert mask.sum(dim=1).tolist() == lengths  # exactly the sequence, padding masked
    assert [int((ids[i] == image_id).sum()) for i in range(4)] == [TOKENS_PER_IMAGE, 2 * TOKENS_PER_IMAGE] * 2
    assert batch["pixel_values"].shape[0] == 2 * (1 + 2)  # every example's images, once per half


def test_rm_on_images_learns_and_its_lora_adapter_reloads(llava4, pref_dir, tmp_path):
    from peft import PeftModel

    from tunery.model.loader import load_tokenizer
    from tunery.train.rewards import load_sequence_classifier

    out = tmp_path / "rm"
    probe = _FirstBatch()
    run_train(_cfg(llava4, pref_dir, out, "rm", max_steps=12), callbacks=[probe])
    losses = _log(out, "loss")
    assert len(losses) == 12 and all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, losses
    adapter = json.load(open(out / "adapter_config.json"))
    assert "score" in adapter["modules_to_save"]
    assert not any("vision_tower" in t or t.endswith("score") for t in adapter["target_modules"])

    cfg = train_config(llava4, tmp_path / "unused")
    tokenizer = load_tokenizer(cfg.model)
    reloaded = PeftModel.from_pretrained(load_sequence_classifier(tokenizer, cfg.model), out).eval()
    batch = {k: v for k, v in probe.batch.items()}
    with torch.no_grad():
        rewards = reloaded(**batch).logits
        blind = reloaded(**{**batch, "pixel_values": torch.zeros_like(batch["pixel_values"])}).logits
    torch.testing.assert_close(rewards, probe.rewards, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(blind, rewards, atol=1e-4)  # the images reach the score


def test_full_rm_on_images_saves_a_classifier_that_reloads(llava4, pref_dir, tmp_path):
    from tunery.model.loader import load_tokenizer
    from tunery.train.rewards import load_sequence_classifier

    out = tmp_path / "rm_full"
    probe = _FirstBatch()
    run_train(_cfg(llava4, pref_dir, out, "rm", finetuning_type="full", max_steps=6, learning_rate=1e-3),
              callbacks=[probe])
    assert all(torch.isfinite(torch.tensor(_log(out, "loss"))))
    assert json.load(open(out / "config.json"))["architectures"] == ["LlavaForSequenceClassification"]
    cfg = train_config(out, tmp_path / "unused")
    model = load_sequence_classifier(load_tokenizer(cfg.model), cfg.model).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**probe.batch).logits, probe.rewards, atol=1e-5, rtol=1e-5)


class _Logits(TrainerCallback):
    """The first training batch and the trained policy's logits on it at the end of training."""

    def __init__(self):
        self.batch, self.logits = None, None

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.batch = next(iter(kwargs["train_dataloader"]))
        model.eval()
        with torch.no_grad():
            self.logits = model(**_model_inputs(self.batch)).logits.clone()


def _model_inputs(batch):
    skip = {"completion_mask", "label"}
    return {k: v for k, v in batch.items() if not k.startswith("KL_") and k not in skip}


def test_kto_batches_keep_each_prompts_images_in_its_kl_pair(llava4, pref_dir):
    from tunery.data import get_dataset
    from tunery.data.template import get_template
    from tunery.model.loader import load_tokenizer
    from tunery.train.kto import MediaKTOCollator, with_kl_completions
    from tunery.train.media import media_encoder
    from tunery.train.pref_common import to_kto_columns

    cfg = _cfg(llava4, pref_dir, pref_dir / "unused", "kto", dataset="mm_kto")
    tokenizer = load_tokenizer(cfg.model)
    media = media_encoder(cfg)
    data = get_dataset(cfg, tokenizer, get_template("auto", tokenizer), "kto", media=media).train_dataset
    rows = with_kl_completions(to_kto_columns(data), 2)
    assert "images" not in rows.column_names and "media_images" in rows.column_names
    first, second = rows[0], rows[1]
    assert first["KL_completion_ids"] == second["completion_ids"]  # the reply is borrowed ...
    batch = MediaKTOCollator(tokenizer.pad_token_id, media, 512)([first, second])
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    for prefix in ("", "KL_"):  # ... the prompt keeps its own image tokens
        ids, mask = batch[f"{prefix}input_ids"], batch[f"{prefix}completion_mask"]
        assert [int((row == image_id).sum()) for row in ids] == [TOKENS_PER_IMAGE] * 2
        assert all(not bool(mask[i][ids[i] == image_id].any()) for i in range(2))  # media never trained
    assert batch["KL_input_ids"][0, :len(first["prompt_ids"])].tolist() == first["prompt_ids"]
    assert batch["KL_completion_mask"][0].sum() == len(second["completion_ids"])
    assert batch["pixel_values"].shape[0] == 2
    assert batch["KL_input_ids"].shape == batch["input_ids"].shape  # one width: position-bound media inputs fit both


def test_kto_on_images_trains_and_its_lora_adapter_reloads(llava4, pref_dir, tmp_path):
    from tunery.model.loader import load_model, load_tokenizer

    out = tmp_path / "kto"
    probe = _Logits()
    run_train(_cfg(llava4, pref_dir, out, "kto", dataset="mm_kto", max_steps=12, learning_rate=1e-2),
              callbacks=[probe])
    losses = _log(out, "loss")
    assert len(losses) == 12 and all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, losses
    assert "pixel_values" in probe.batch and "KL_input_ids" in probe.batch
    cfg = train_config(llava4, tmp_path / "unused", adapter_name_or_path=str(out))
    tokenizer = load_tokenizer(cfg.model)
    reloaded = load_model(tokenizer, cfg.model, cfg.finetuning)
    with torch.no_grad():
        logits = reloaded(**_model_inputs(probe.batch)).logits
    torch.testing.assert_close(logits, probe.logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("stage", ["orpo", "simpo"])
def test_orpo_and_simpo_on_images_give_every_forward_its_images(llava4, pref_dir, tmp_path, monkeypatch, stage):
    from transformers import LlavaForConditionalGeneration

    seen = []
    forward = LlavaForConditionalGeneration.forward

    def spy(self, input_ids=None, pixel_values=None, **kwargs):
        image_id = self.config.image_token_id
        seen.append((int((input_ids == image_id).sum()), None if pixel_values is None else pixel_values.shape[0]))
        return forward(self, input_ids=input_ids, pixel_values=pixel_values, **kwargs)

    monkeypatch.setattr(LlavaForConditionalGeneration, "forward", spy)
    out = tmp_path / stage
    run_train(_cfg(llava4, pref_dir, out, stage, max_steps=8, learning_rate=1e-2))
    losses = _log(out, "loss")
    assert len(losses) == 8 and all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2, losses
    assert len(seen) >= 8
    # every forward pass: one image's features per TOKENS_PER_IMAGE image tokens (chosen and rejected rows)
    assert all(n is not None and tokens == n * TOKENS_PER_IMAGE for tokens, n in seen), seen


class _Trained(TrainerCallback):
    """At the end of training: which linear layers are 4-bit, and whether the LoRA B matrices moved."""

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.four_bit = sorted(n for n, m in model.named_modules() if type(m).__name__ == "Linear4bit")
        self.lora_b_moved = any(float(p.detach().abs().sum()) > 0 for n, p in model.named_parameters() if "lora_B" in n)
        self.trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)


@pytest.mark.parametrize(("stage", "dataset"), [("sft", "mllm_demo"), ("dpo", "mm_pref"), ("kto", "mm_kto"),
                                                ("rm", "mm_pref")])
def test_qlora_on_a_vlm_trains_the_language_model_adapter_over_a_4bit_base(llava4, pref_dir, mllm_dir, tmp_path,
                                                                           stage, dataset):
    pytest.importorskip("bitsandbytes")  # bitsandbytes 0.50 runs 4-bit NF4 on the CPU (NOTES.md)
    data_dir = mllm_dir if stage == "sft" else pref_dir
    out = tmp_path / f"q_{stage}"
    probe = _Trained()
    run_train(_cfg(llava4, data_dir, out, stage, dataset=dataset, quantization_bit=4, max_steps=3),
              callbacks=[probe])
    assert all(torch.isfinite(torch.tensor(_log(out, "loss"))))
    assert any(".language_model.layers.0.self_attn.q_proj" in n for n in probe.four_bit)  # the base is 4-bit
    assert probe.lora_b_moved  # the adapter learnt (LoRA B starts at zero)
    trained_lora = [n for n in probe.trainable if "lora_" in n]
    assert trained_lora and all(".language_model." in n for n in trained_lora)
    assert not any("vision_tower" in n or "multi_modal_projector" in n for n in probe.trainable)
    assert (out / "adapter_config.json").is_file()


@pytest.mark.parametrize(("stage", "dataset", "kind", "settings", "trained"), [
    ("kto", "mm_kto", "full", {}, {"language"}),
    ("kto", "mm_kto", "freeze", {"freeze_trainable_layers": 1, "freeze_multi_modal_projector": False},
     {"layer1", "projector"}),
    ("rm", "mm_pref", "freeze", {"freeze_trainable_layers": 1}, {"layer1", "score"}),
    ("dpo", "mm_pref", "freeze", {"freeze_trainable_layers": 1, "freeze_vision_tower": False}, {"layer1", "vision"}),
])
def test_full_and_freeze_preference_stages_train_the_parts_the_freeze_settings_name(
        llava4, pref_dir, tmp_path, stage, dataset, kind, settings, trained):
    out = tmp_path / f"{stage}_{kind}"
    probe = _Trained()
    run_train(_cfg(llava4, pref_dir, out, stage, dataset=dataset, finetuning_type=kind, max_steps=2,
                   learning_rate=1e-4, **settings), callbacks=[probe])
    assert all(torch.isfinite(torch.tensor(_log(out, "loss"))))

    def part(name):
        if "vision_tower" in name:
            return "vision"
        if "multi_modal_projector" in name:
            return "projector"
        if name.startswith("score."):
            return "score"
        if kind == "freeze" and ".language_model.layers." in name:
            return "layer" + name.split(".language_model.layers.")[1].split(".")[0]
        return "language" if ".language_model." in name or name.startswith("lm_head") else name

    assert {part(n) for n in probe.trainable} == trained


def _audio_preference_data(root):
    """mm_pref / mm_kto as above, with one WAV clip per row in an ``audios`` column."""
    import wave

    import numpy as np

    root.mkdir(parents=True, exist_ok=True)
    for i, pitch in ((1, 300), (2, 700)):
        with wave.open(str(root / f"{i}.wav"), "wb") as f:
            f.setnchannels(1)
            f.setsampwidth(2)
            f.setframerate(16000)
            f.writeframes((np.sin(np.linspace(0, pitch, 16000)) * 9000).astype(np.int16).tobytes())
    pref = [{"conversations": [{"from": "human", "value": "<audio>What is said?"}],
             "chosen": {"from": "gpt", "value": "Good morning."}, "rejected": {"from": "gpt", "value": "A dog."},
             "audios": [f"{i}.wav"]} for i in (1, 2, 1, 2)]
    kto = [{"conversations": [{"from": "human", "value": "<audio>What is said?"},
                              {"from": "gpt", "value": reply}], "label": good, "audios": [f"{i}.wav"]}
           for i in (1, 2) for reply, good in (("Good morning.", True), ("A dog.", False))]
    (root / "pref.json").write_text(json.dumps(pref))
    (root / "kto.json").write_text(json.dumps(kto))
    (root / "dataset_info.json").write_text(json.dumps({
        "mm_pref": {"file_name": "pref.json", "formatting": "sharegpt", "ranking": True,
                    "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected",
                                "audios": "audios"}},
        "mm_kto": {"file_name": "kto.json", "formatting": "sharegpt",
                   "columns": {"messages": "conversations", "kto_tag": "label", "audios": "audios"}}}))
    return root


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llava_next", "qwen2_vl", "qwen2_5_vl", "gemma3", "mllama", "qwen2_audio"])
def test_rm_kto_and_orpo_run_on_every_tiny_family(family, tiny_vlm_factory, pref_dir, tmp_path):
    """Two steps of each stage per family: Qwen-VL's 3-D rope (mm_token_type_ids, also for the KL rows),
    Gemma 3's image attention, mllama's cross-attention mask and Qwen2-Audio's features all reach the model."""
    try:
        path = tiny_vlm_factory(family)
    except ImportError as exc:  # the Qwen-VL processors need torchvision (docs/multimodal.md)
        pytest.skip(str(exc))
    data = _audio_preference_data(tmp_path / "audio") if family == "qwen2_audio" else pref_dir
    for stage, dataset in (("rm", "mm_pref"), ("kto", "mm_kto"), ("orpo", "mm_pref")):
        out = tmp_path / stage
        run_train(train_config(path, out, stage=stage, dataset=dataset, dataset_dir=str(data), template="auto",
                               cutoff_len=2048, per_device_train_batch_size=2, max_steps=2, learning_rate=1e-3,
                               overwrite_cache=True, lora_rank=8))
        losses = _log(out, "loss")
        assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses))), (stage, losses)


def test_full_qwen2_vl_reward_model_reloads_from_its_saved_layout(tiny_vlm_factory, pref_dir, tmp_path):
    """Qwen2-VL checkpoints keep the older top-level ``visual.*`` layout: the reward model reads and writes it
    through transformers' key renaming of the generation class, so what rm saves loads back unchanged."""
    from tunery.model.loader import load_tokenizer
    from tunery.train.rewards import load_sequence_classifier

    try:
        path = tiny_vlm_factory("qwen2_vl")
    except ImportError as exc:
        pytest.skip(str(exc))
    out = tmp_path / "rm"
    probe = _FirstBatch()
    run_train(train_config(path, out, stage="rm", dataset="mm_pref", dataset_dir=str(pref_dir), template="auto",
                           cutoff_len=2048, per_device_train_batch_size=2, max_steps=2, learning_rate=1e-3,
                           finetuning_type="full", overwrite_cache=True), callbacks=[probe])
    assert "mm_token_type_ids" in probe.batch and "image_grid_thw" in probe.batch
    cfg = train_config(out, tmp_path / "unused")
    model = load_sequence_classifier(load_tokenizer(cfg.model), cfg.model).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**probe.batch).logits, probe.rewards, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("stage", "dataset"), [("rm", "mm_pref"), ("kto", "mm_kto")])
def test_dry_run_of_a_preference_stage_counts_the_image_tokens(llava4, pref_dir, tmp_path, stage, dataset):
    """The dry run encodes media rows as the stage does (before: every row refused as text-only)."""
    from tunery.data import get_dataset
    from tunery.data.template import get_template
    from tunery.model.loader import load_tokenizer
    from tunery.train.dry_run import build_plan
    from tunery.train.media import media_encoder

    cfg = _cfg(llava4, pref_dir, tmp_path / "o", stage, dataset=dataset)
    plan = build_plan(cfg, flops=1e11, bandwidth=1e10)
    tokenizer = load_tokenizer(cfg.model)
    rows = get_dataset(cfg, tokenizer, get_template("auto", tokenizer), stage, media=media_encoder(cfg)).train_dataset
    sequences = ([r["chosen_input_ids"] for r in rows] + [r["rejected_input_ids"] for r in rows] if stage == "rm"
                 else [r["input_ids"] for r in rows])
    assert plan.skipped == 0 and plan.examples == len(rows) == (7 if stage == "rm" else 12)
    assert plan.tokens == sum(len(s) for s in sequences)
    # rm: six rows with one image and one with two, in both the chosen and the rejected sequence; kto: one each
    images = 2 * (6 + 2) if stage == "rm" else 12
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    assert sum(s.count(image_id) for s in sequences) == images * TOKENS_PER_IMAGE


def test_mllama_kl_rows_run_with_the_cross_attention_mask_of_their_prompts(tiny_mllama, mllm_dir):
    """Prompts of different lengths: the KL rows (another row's reply) get the same width as the main rows,
    so mllama's cross-attention mask, built from the main rows, fits them and the forward pass runs."""
    from datasets import Dataset
    from transformers import AutoConfig

    from tunery.data.media import MediaEncoder, MediaSettings
    from tunery.data.processors import ProcessSettings, process_batch
    from tunery.data.template import get_template
    from tunery.model.loader import load_tokenizer, model_class_for
    from tunery.model.multimodal import load_processor
    from tunery.train.kto import MediaKTOCollator, with_kl_completions
    from tunery.train.pref_common import to_kto_columns

    tokenizer = load_tokenizer(train_config(tiny_mllama, "unused").model)
    media = MediaEncoder(load_processor(tiny_mllama), MediaSettings())
    image = str(mllm_dir / "mllm_demo_data" / "1.jpg")
    rows = []
    for i, (question, reply) in enumerate((("<image>Who?", "He is Thomas Muller from Bayern Munich."),
                                           ("<image>Who is the man in this picture, please?", "A cat."))):
        record = {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": reply}],
                  "tools": None, "chosen": None, "rejected": None, "kto_tag": i == 0, "images": [image],
                  "videos": None, "audios": None, "_source": {"file": "t", "row": i}}
        out = process_batch({k: [v] for k, v in record.items()}, stage="kto", tokenizer=tokenizer,
                            template=get_template("auto", tokenizer), settings=ProcessSettings(cutoff_len=512),
                            media=media)
        assert out["_status"] == [0], out["_error"]
        rows.append({k: v[0] for k, v in out.items() if not k.startswith("_")})
    data = with_kl_completions(to_kto_columns(Dataset.from_list(rows)), 2)
    batch = MediaKTOCollator(tokenizer.pad_token_id, media, 512)(list(data))
    assert batch["KL_input_ids"].shape == batch["input_ids"].shape
    assert batch["cross_attention_mask"].shape[1] == batch["input_ids"].shape[1]
    model = model_class_for(AutoConfig.from_pretrained(tiny_mllama)).from_pretrained(tiny_mllama).eval()
    media_inputs = {k: batch[k] for k in ("pixel_values", "aspect_ratio_ids", "aspect_ratio_mask", "cross_attention_mask")
                    if k in batch}
    with torch.no_grad():
        for prefix in ("", "KL_"):
            logits = model(input_ids=batch[f"{prefix}input_ids"], attention_mask=batch[f"{prefix}attention_mask"],
                           **media_inputs).logits
            assert torch.isfinite(logits).all()


def test_full_run_output_keeps_the_processor_and_trains_on_images_again(llava4, mllm_dir, tmp_path):
    """A full sft of a VLM saves the processor files beside the weights: the output is a VLM folder
    that the next run (here rm) loads with its processor and trains on images."""
    from tunery.model.multimodal import load_processor

    first = tmp_path / "sft"
    run_train(_cfg(llava4, mllm_dir, first, "sft", dataset="mllm_demo", finetuning_type="full", max_steps=1))
    assert (first / "processor_config.json").is_file()
    assert load_processor(first).image_token == "<image>"
    data = _preference_data(tmp_path / "data", mllm_dir)
    second = tmp_path / "rm"
    run_train(_cfg(first, data, second, "rm", max_steps=2))
    assert all(torch.isfinite(torch.tensor(_log(second, "loss"))))
