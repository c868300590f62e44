"""LLaMA-Factory's own text example YAMLs run (dry run) or stop at parse time with a one-line reason.

Each YAML is read in place and run as ``tunery train <example.yaml> --dry_run true`` with only the model
(the tiny fixture), the data folder (LLaMA-Factory's data beside the checkout) and the sizes swapped.
A new example file fails here until it is given an expected outcome.

Folders not walked: ``megatron``, ``megatron_bridge`` (Megatron-Core engines), ``ktransformers``
(KTransformers engine), ``ascend`` (Huawei NPU FSDP recipes), ``v1`` (LLaMA-Factory's next config
format, nested, not the flat keys Tunery reads), ``accelerate`` and ``deepspeed`` (launcher configs, not
run configs); ``inference`` and ``merge_lora`` are parsed by tests/unit/test_config.py.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import io
from pathlib import Path

import pytest
import torch
import yaml

from tunery.cli import train as cli_train
from tunery.errors import TuneryError

FOLDERS = ("train_lora", "train_full", "train_qlora", "extras")
# Multimodal examples (issue #14): the settings and template names are honoured; on the tiny text model the
# dry run skips the image rows of mllm_demo as invalid (no processor) and plans the text datasets.
MOSS_VL = "unknown template 'moss_vl'"
NOT_EXAMPLES = {"extras/multi_tokens/tokens_cfg.yaml": "a token list read by new_special_tokens_config, not a run config"}

# example (relative to examples/) -> None: the dry run prints a plan; str: the run stops with this reason.
# "deepspeed" cases stop on the missing package only where deepspeed is not installed.
EXPECTED: dict[str, str | None] = {
    "train_lora/mossvl_lora_sft.yaml": MOSS_VL,
    "train_lora/qwen3_lora_dpo.yaml": None,
    "train_lora/qwen3_lora_kto.yaml": "stage kto needs per_device_train_batch_size of at least 2",
    "train_lora/qwen3_lora_pretrain.yaml": None,
    "train_lora/qwen3_lora_reward.yaml": None,
    "train_lora/qwen3_lora_sft.yaml": None,
    "train_lora/qwen3_lora_sft_ds3.yaml": "deepspeed",
    "train_lora/qwen3_lora_sft_ray.yaml": None,  # Ray keys honoured; USE_RAY=1 (or use_ray) turns Ray on
    "train_lora/qwen3_preprocess.yaml": None,
    "train_lora/qwen3vl_lora_dpo.yaml": "could not load dataset 'rlhf_v'",
    "train_lora/qwen3vl_lora_sft.yaml": None,
    "train_full/mossvl_full_sft.yaml": MOSS_VL + "|deepspeed",
    "train_full/qwen3_full_sft.yaml": "deepspeed",
    "train_full/qwen3vl_full_sft.yaml": "deepspeed",
    "train_qlora/llama3_lora_sft_aqlm.yaml": None,
    "train_qlora/llama3_lora_sft_awq.yaml": None,
    "train_qlora/llama3_lora_sft_gptq.yaml": None,
    "train_qlora/qwen3_lora_sft_bnb_npu.yaml": None,
    "train_qlora/qwen3_lora_sft_otfq.yaml": None,
    "extras/adam_mini/qwen2_full_sft.yaml": None,  # implemented (make test installs its package)
    "extras/apollo/llama3_full_sft.yaml": "pure_bf16 needs CUDA",
    "extras/asft/llama2_full_asft.yaml": "dataset 'med' is not in|deepspeed",  # its data is not in LF's data/
    "extras/asft/qwen2_full_asft.yaml": "dataset 'math' is not in|deepspeed",
    "extras/badam/llama3_full_sft.yaml": None,
    "extras/dft/qwen2_full_sft.yaml": None,  # implemented (make test installs its package)
    "extras/eaft/qwen25_05b_eaft_full.yaml": None,
    # FP8 runs on CUDA only (this test's machine may have none); the FSDP one also uses a key transformers 5
    # removed (read first, so it stops on it even with CUDA)
    "extras/fp8/llama3_fp8_deepspeed_sft.yaml": "fp8 needs CUDA|deepspeed",
    "extras/fp8/llama3_fp8_fsdp_sft.yaml": "transformers 5 removed it",
    "extras/fsdp_qlora/llama3_lora_sft.yaml": None,
    "extras/galore/llama3_full_sft.yaml": "pure_bf16 needs CUDA",
    "extras/llama_pro/llama3_freeze_sft.yaml": "freeze_trainable_layers 8 does not fit a model with 2 layers",  # needs `tunery expand` first
    "extras/loraplus/llama3_lora_sft.yaml": None,
    "extras/mod/llama3_full_sft.yaml": "Mixture-of-Depths is not supported by Tunery: no maintained library",
    "extras/muon/qwen2_full_sft.yaml": None,
    "extras/nlg_eval/llama3_lora_predict.yaml": None,
    "extras/oft/llama3_oft_sft.yaml": None,
    "extras/oft/qwen2_5vl_oft_sft.yaml": None,
    "extras/pissa/llama3_lora_sft.yaml": None,
    "extras/qoft/llama3_oft_sft_awq.yaml": None,
    "extras/qoft/llama3_oft_sft_bnb_npu.yaml": None,
    "extras/qoft/llama3_oft_sft_gptq.yaml": None,
}

HAS_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None


def examples_root(reference_dir: Path) -> Path:
    return reference_dir / "lf" / "examples"


def test_every_example_has_an_expected_outcome(reference_dir):
    root = examples_root(reference_dir)
    found = {str(Path(p).relative_to(root)) for f in FOLDERS for p in glob.glob(str(root / f / "**/*.yaml"), recursive=True)}
    assert sorted(found - set(EXPECTED) - set(NOT_EXAMPLES)) == []
    assert sorted(set(EXPECTED) - found) == []


@pytest.mark.parametrize("example", sorted(EXPECTED))
def test_lf_example_dry_runs_or_says_why_not(example, reference_dir, tiny_chatml_model, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNERY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the outcomes are those of a CPU machine
    path = examples_root(reference_dir) / example
    tokens = [str(path), "--model_name_or_path", str(tiny_chatml_model),
              "--dataset_dir", str(reference_dir / "lf" / "data"), "--max_samples", "8", "--cutoff_len", "64",
              "--preprocessing_num_workers", "null", "--output_dir", str(tmp_path / "out"), "--dry_run", "true"]
    raw = yaml.safe_load(path.read_text())
    if raw.get("tokenized_path"):  # never write into the checkout
        tokens += ["--tokenized_path", str(tmp_path / "tokenized")]
    if raw.get("deepspeed"):  # LLaMA-Factory's path is relative to its own checkout
        tokens += ["--deepspeed", str(reference_dir / "lf" / raw["deepspeed"])]
    expected = EXPECTED[example]
    if expected == "deepspeed" and HAS_DEEPSPEED:
        expected = None  # installed: the example dry-runs like the others
    out = io.StringIO()
    if expected is None:
        with contextlib.redirect_stdout(out):
            assert cli_train.main(tokens) == 0
        assert out.getvalue().startswith("plan: stage ")
        assert "dry run: nothing was trained" in out.getvalue()
        return
    with pytest.raises(TuneryError) as err, contextlib.redirect_stdout(out):
        cli_train.main(tokens)
    # "A|B": either reason may come first (B: deepspeed not installed, depending on the machine)
    assert any(reason in err.value.message for reason in expected.split("|")), err.value.message
    assert "\n" not in err.value.message
    assert out.getvalue() == ""
