"""Equal loss means equal math: ``tunery train`` (sft, LoRA, fast path) vs a plain transformers Trainer.

Both sides get the same chat template (the tokenizer's own, rendered by Tunery's ``template: auto``
and by ``tokenizer.apply_chat_template``), the same rows in the same order, the same LoRA setup and
seed, the same optimizer and schedule. The plain side tokenizes by hand (prompt masked, reply and its
end-of-turn token trained), pads batches, and lets the model compute its own cross-entropy over full
logits; Tunery takes padding-free rows, per-example attention and the chunked loss. Per-step losses
must agree to float32 rounding. A difference between the two tools must come from something that
can be named (template, system prompt), never from the training math (docs/training.md).
"""

from __future__ import annotations

import json

import pytest

from tests.unit.train_utils import logged_losses, train_config
from tunery.train.workflow import run_stage

ROWS = [
    ("What is the capital of France?", "Paris is the capital of France."),
    ("Write a short poem about the sea.", "The sea is wide, the sky is blue, and waves roll in."),
    ("Translate good morning into French.", "Bonjour."),
    ("How are you today?", "I am fine, thank you. How are you?"),
    ("What is 1 + 2?", "1 + 2 = 3."),
    ("Tell me about the sky.", "The sky is blue and wide; at night it is dark with stars."),
    ("Who are you?", "I am a helpful assistant."),
    ("Name a colour.", "Blue is a colour."),
    ("def add(a, b):", "It returns a + b."),
    ("你好，请问你是谁？", "我是一个人工智能助手。"),
]
SETTINGS = {"learning_rate": 5e-3, "per_device_train_batch_size": 3, "max_steps": 6, "lr_scheduler_type": "cosine",
            "warmup_steps": 1, "seed": 11, "weight_decay": 0.0}


def _dataset_dir(tmp_path):
    rows = [{"instruction": q, "input": "", "output": a} for q, a in ROWS]
    (tmp_path / "rows.json").write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    (tmp_path / "dataset_info.json").write_text(json.dumps({"rows": {"file_name": "rows.json"}}), encoding="utf-8")
    return tmp_path


def _plain_rows(tokenizer) -> list[dict[str, list[int]]]:
    """input_ids/labels as a user of plain transformers writes them: chat template, prompt masked,
    the reply and its end-of-turn token trained, the template's text after that token not kept."""
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    out = []
    for question, answer in ROWS:
        messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        prompt = tokenizer.apply_chat_template(messages[:1], add_generation_prompt=True, tokenize=False)
        full = tokenizer.apply_chat_template(messages, tokenize=False)
        assert full.startswith(prompt)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        ids = tokenizer(full, add_special_tokens=False)["input_ids"]
        assert ids[: len(prompt_ids)] == prompt_ids
        stop = ids.index(end, len(prompt_ids)) + 1
        ids = ids[:stop]
        out.append({"input_ids": ids, "attention_mask": [1] * len(ids),
                    "labels": [-100] * len(prompt_ids) + ids[len(prompt_ids):]})
    return out


def _plain_trainer_losses(model_path, adapter_config, out_dir) -> list[float]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    set_seed(SETTINGS["seed"])  # the LoRA A matrices are random: same seed, same modules, same init
    lora = LoraConfig(r=adapter_config["r"], lora_alpha=adapter_config["lora_alpha"],
                      lora_dropout=adapter_config["lora_dropout"], target_modules=adapter_config["target_modules"],
                      task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    args = TrainingArguments(output_dir=str(out_dir), logging_steps=1, report_to=[], use_cpu=True,
                             save_strategy="no", disable_tqdm=True, remove_unused_columns=False, **SETTINGS)
    trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_list(_plain_rows(tokenizer)),
                      data_collator=DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100))
    trainer.train()
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


def test_tunery_losses_equal_a_plain_transformers_trainer(tiny_chatml_model, tmp_path):
    cfg = train_config(tiny_chatml_model, tmp_path / "tunery", stage="sft", dataset="rows",
                       dataset_dir=str(_dataset_dir(tmp_path)), template="auto", cutoff_len=128,
                       lora_rank=8, lora_target="all", save_strategy="no", use_cpu=True, overwrite_cache=True,
                       **SETTINGS)
    run_stage(cfg)
    logged = logged_losses(tmp_path / "tunery")
    tunery = [logged[step] for step in sorted(logged)]
    adapter_config = json.loads((tmp_path / "tunery" / "adapter_config.json").read_text(encoding="utf-8"))
    plain = _plain_trainer_losses(tiny_chatml_model, adapter_config, tmp_path / "plain")
    assert len(tunery) == len(plain) == SETTINGS["max_steps"]
    assert len(set(plain)) > 1  # the steps differ: the weights moved
    assert tunery == pytest.approx(plain, rel=2e-5), (tunery, plain)
