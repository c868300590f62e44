"""Write docs/compat.md from the LLaMA-Factory key table (src/tunery/config/lf_keys.py).

Run ``python scripts/compat_doc.py`` after changing the table; tests/unit/config/test_lf_keys.py fails
while the doc is out of date.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "compat.md"

INTRO = """\
# LLaMA-Factory compatibility

Tunery reads LLaMA-Factory's YAML configs. Every user-facing setting of LLaMA-Factory 0.9.5's argument
dataclasses (`hparams/model_args.py`, `data_args.py`, `finetuning_args.py`, `generating_args.py`,
`evaluation_args.py`, `training_args.py`), plus a few names of older releases, has one status:

- **honoured**: a Tunery setting of the same name and meaning;
- **alias**: read as another Tunery setting (same meaning, another name);
- **refused**: Tunery cannot do what it asks. Set to anything but LLaMA-Factory's default, the run stops
  at parse time (exit 2) with the one-line reason below. Set to the default (the feature off, as
  LLaMA-Factory's web UI writes it) it is accepted and changes nothing.

No setting is read and then ignored: a test checks that code reads every Tunery setting. transformers'
training arguments (`learning_rate`, `bf16`, `deepspeed`, ...) are not listed: Tunery's training
settings are transformers' own `Seq2SeqTrainingArguments`, so they mean what they mean there.

This page is generated from `src/tunery/config/lf_keys.py` by `scripts/compat_doc.py`; edit the table,
then run the script.
"""

DIFFERENCES = """\
## What differs on purpose

- **Refused keys at their default are accepted.** LLaMA-Factory's web UI writes `use_galore: false`,
  `use_unsloth: false`, ...; those configs parse. Asking for the feature stops the run with the reason.
- **Unknown keys are errors** that name the nearest known key, rather than being passed on.
- **Templates follow the model's official chat template** where LLaMA-Factory's text differs in
  details (spaces, newlines, default system prompts); the template table below names each difference,
  [templates.md](templates.md) explains them. Tunery renders a conversation's text once and tokenizes
  it whole; LLaMA-Factory tokenizes each piece apart, so on tokenizers that add a space before every
  piece (SentencePiece) its ids can carry spaces its text does not show.
- **`qwen3`** keeps Qwen3's official reasoning rule (earlier replies lose their `<think>` block);
  LLaMA-Factory instead gives every trained reply an empty block.
- **bf16/fp16 without a GPU** train in fp32 (with a warning) instead of failing.
- **`tunery train cfg.yaml`** trains even when the YAML omits `do_train`.
- **`overwrite_output_dir`** (removed from transformers 5) guards finished runs: without it Tunery will
  not write into a folder that holds one.
- **`stage`** also accepts `orpo`, `simpo` (LLaMA-Factory: `dpo` with `pref_loss`) and `grpo`.
- **`oft_target`** chooses OFT's modules. LLaMA-Factory 0.9.5 parses it but wraps `lora_target`'s
  modules; both default to `all`, so LLaMA-Factory's OFT examples get the same layers.
- **`shift_attn`** (S^2-Attn) runs through a registered attention function on every model that
  dispatches attention through transformers' registry (not only Llama), and the wrapped group of the
  shifted heads keeps the causal order (LongLoRA's reference lets it see later tokens).
- **Liger kernels, FP8 and pure bf16 need CUDA, and say so at parse time.** Without a CUDA GPU,
  `enable_liger_kernel: true`, `fp8: true` and `pure_bf16: true` stop with one line
  ("enable_liger_kernel needs CUDA (...)"); LLaMA-Factory stops early only for `pure_bf16`, the others
  fail at their first kernel. On CUDA, Liger goes through transformers'
  `use_liger_kernel` (patched in when training starts; on the pt/sft fast path Tunery's chunked loss stays
  in place of Liger's fused cross-entropy, its RMSNorm/RoPE/SwiGLU kernels apply) and FP8 through
  accelerate's `mixed_precision: fp8` with the backend's recipe (`fp8_backend: auto` takes the first of
  torchao, Transformer Engine, MS-AMP installed). Packages: `pip install 'tunery[liger]'`, `'tunery[fp8]'`.
- **`ld_alpha`** (LD-DPO) goes through trl's DPO, which down-weights the tokens past the shorter
  reply in the reference model's log-probabilities as well; LLaMA-Factory does it for the policy only.
- **Unsloth (`use_unsloth`) needs CUDA and says what it cannot do.** Without a CUDA GPU it stops at parse
  time ("use_unsloth needs CUDA (...)"); on one, `pip install unsloth` (not a Tunery extra: it pins its own
  torch and transformers). Training LoRA/QLoRA or full goes through Unsloth's `FastLanguageModel`
  (`from_pretrained`, then `get_peft_model` with Tunery's resolved targets and the run's `seed`), as in
  LLaMA-Factory; where LLaMA-Factory would silently do something else Tunery refuses with the reason:
  `finetuning_type: freeze` (Unsloth has no such mode), more than one adapter or `create_new_adapter`,
  `stage: rm`, `shift_attn`, Liger kernels, `train_from_scratch`, non-bitsandbytes quantization, ZeRO-3,
  `tunery export`, `infer_backend: vllm`, and a vision/audio-language model (when its config is read).
  `quantization_bit: 8` loads in 8 bit (LLaMA-Factory loads 16-bit weights then). The pt/sft fast path
  steps aside for Unsloth's own kernels. `use_unsloth_gc` (CUDA only, no package) is transformers' offloaded checkpointing: each
  checkpointed layer's saved input waits in CPU memory until backward.
- **LoftQ is Tunery's own setting**: LLaMA-Factory 0.9.5 has no key for it. `loftq_init: true` (with
  `loftq_bits`: 4 or 8, `loftq_iter`) starts a new LoRA adapter through peft's LoftQ
  (`init_lora_weights: loftq`): the adapted weights of the base become their quantized values and the
  adapter the rank-`lora_rank` fit of the quantization error, so use the adapter with the base loaded
  in `quantization_bit: loftq_bits`. peft's LoftQ runs on CUDA (or XPU) only, quantizes the base itself
  (so `quantization_bit` is refused with it) and leaves the fit unscaled (so `lora_alpha` defaults to,
  and must equal, `lora_rank`; no rsLoRA). Package: `pip install 'tunery[loftq]'`.
"""


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render() -> str:
    """The full text of docs/compat.md."""
    sys.path.insert(0, str(ROOT / "src"))
    from tunery.config.lf_keys import LF_KEYS, LF_TEMPLATES, REFUSED_VALUES
    from tunery.data.templates.builtin import BUILTINS, DIFFERS_ON_PURPOSE
    from tunery.model.multimodal import is_multimodal_template

    counts = Counter(entry.status for entry in LF_KEYS.values())
    out = [INTRO, "## Settings", "",
           f"{len(LF_KEYS)} keys: {counts['honoured']} honoured, {counts['alias']} alias, "
           f"{counts['refused']} refused.", "",
           "| key | status | details |", "|---|---|---|"]
    for key in sorted(LF_KEYS):
        entry = LF_KEYS[key]
        if entry.status == "honoured":
            details = entry.reason
        elif entry.status == "alias":
            details = f"read as `{entry.target}`"
        else:
            details = f"{entry.reason} (accepted: `{json.dumps(entry.default)}`)"
        out.append(f"| `{key}` | {entry.status} | {_cell(details)} |")
    out += ["", "Values of honoured keys that are refused:", "", "| setting | reason |", "|---|---|"]
    for (key, value), reason in sorted(REFUSED_VALUES.items()):
        out.append(f"| `{key}: {value}` | {_cell(reason)} |")
    builtin = [n for n in LF_TEMPLATES if n in BUILTINS]
    out += ["", "## Templates", "",
            f"LLaMA-Factory 0.9.5 registers {len(LF_TEMPLATES)} chat templates; {len(builtin)} of them are Tunery "
            "builtins of the same name: every text template, and `gemma3`. A builtin renders what LLaMA-Factory "
            "renders under that name (tests/data/lf_template_renders.json, generated from LLaMA-Factory by "
            "scripts/lf_template_renders.py, pins each), or the model's official chat template byte for byte "
            "where it has one; the last column says where the text differs on purpose. Reasoning templates "
            "honour `enable_thinking` and `preserve_thinking`. The other names belong to multimodal families: "
            "they are read as `template: auto` (the processor's own chat template, with a notice; "
            "[multimodal.md](multimodal.md)). Details in [templates.md](templates.md).", "",
            "| name | in Tunery | differs from LLaMA-Factory's text |", "|---|---|---|"]
    for name in sorted(LF_TEMPLATES):
        spec = BUILTINS.get(name)
        if spec is None:
            status = ("multimodal: read as `template: auto`" if is_multimodal_template(name)
                      else "use `template: auto`")
        elif spec.official:
            status = f"builtin: official template of {spec.official}"
        else:
            status = "builtin: LLaMA-Factory's text"
        if spec is not None and spec.thinking:
            status += "; reasoning"
        out.append(f"| `{name}` | {status} | {_cell(DIFFERS_ON_PURPOSE.get(name, ''))} |")
    out += ["", DIFFERENCES]
    return "\n".join(out)


if __name__ == "__main__":
    DOC.write_text(render(), encoding="utf-8")
    print(f"wrote {DOC}")
