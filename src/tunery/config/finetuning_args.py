"""Stage, finetuning method, adapters and preference/RL settings (LLaMA-Factory's names).

The method settings live in typed groups (``ft.lora.lora_rank``, ``ft.freeze``, ``ft.preference``,
``ft.rl``, ``ft.multimodal``); the flat names (``ft.lora_rank``, ``--lora_rank``) keep working through
:func:`tunery.config.groups.flat_groups`. Each field's metadata states its domain (see validation.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from tunery.config.groups import flat_groups, group_field

Stage = Literal["pt", "sft", "rm", "ppo", "dpo", "kto", "orpo", "simpo", "grpo"]

FREE = "free text"
PATH = "a path or hub id, checked when it is opened"


def split_list(value: str | list[str] | None) -> list[str]:
    """'a, b' or ['a', 'b'] -> ['a', 'b']."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [v.strip() for v in str(value).split(",") if v.strip()]


@dataclass
class FreezeArguments:
    """finetuning_type: freeze — which layers and modules train."""

    freeze_trainable_layers: int = field(
        default=2,
        metadata={"help": "Freeze: train the last N layers (negative: the first N).", "nonzero": True},
    )
    freeze_trainable_modules: str = field(
        default="all",
        metadata={"help": "Freeze: module names inside those layers to train ('all').",
                  "domain": "module names, checked against the loaded model"},
    )
    freeze_extra_modules: str | None = field(
        default=None,
        metadata={"help": "Freeze: extra non-layer modules to train (e.g. embed_tokens).",
                  "domain": "module names, checked against the loaded model"},
    )


@dataclass
class LoraArguments:
    """finetuning_type: lora — adapter shape, initialisation and LoRA+ / DoRA / rsLoRA / PiSSA / LoftQ."""

    additional_target: str | None = field(
        default=None,
        metadata={"help": "Modules trained fully and saved beside the adapter.",
                  "domain": "module names, checked against the loaded model"},
    )
    lora_rank: int = field(default=8, metadata={"help": "LoRA rank.", "min": 1})
    lora_alpha: int | None = field(default=None, metadata={"help": "LoRA alpha (default: 2 x rank; rank with loftq_init).", "min": 1})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout.", "min": 0, "lt": 1})
    lora_target: str = field(
        default="all",
        metadata={"help": "Modules that get LoRA: 'all' linear layers but the head, or names.",
                  "domain": "'all' or module names, checked against the loaded model"},
    )
    loraplus_lr_ratio: float | None = field(default=None, metadata={"help": "LoRA+: lr ratio of B to A.", "gt": 0})
    loraplus_lr_embedding: float = field(default=1e-6, metadata={"help": "LoRA+: lr of embedding adapters.", "min": 0})
    use_rslora: bool = field(default=False, metadata={"help": "Rank-stabilized LoRA scaling."})
    use_dora: bool = field(default=False, metadata={"help": "Weight-decomposed LoRA (DoRA)."})
    pissa_init: bool = field(default=False, metadata={"help": "Initialize LoRA with PiSSA."})
    pissa_iter: int = field(
        default=16, metadata={"help": "PiSSA fast-SVD iterations (-1: exact SVD).", "min": -1, "nonzero": True}
    )
    pissa_convert: bool = field(default=False, metadata={"help": "Save PiSSA as a plain LoRA adapter."})
    # LoftQ (Tunery's own setting: LLaMA-Factory 0.9.5 has none), through peft's init_lora_weights="loftq"
    loftq_init: bool = field(
        default=False,
        metadata={"help": "Initialize LoRA with LoftQ (peft; CUDA only): the base's weights become their "
                          "loftq_bits-quantized values and the adapter starts as a low-rank fit of the quantization "
                          "error. The adapter then belongs to the base loaded with quantization_bit: loftq_bits."},
    )
    loftq_bits: int = field(default=4, metadata={"help": "LoftQ: quantization bits (4: nf4, 8: int8).",
                                                 "choices": (4, 8)})
    loftq_iter: int = field(default=1, metadata={"help": "LoftQ: alternating quantize / low-rank-fit steps.", "min": 1})
    create_new_adapter: bool = field(default=False, metadata={"help": "New adapter on top of the loaded one."})

    def __post_init__(self) -> None:
        if self.lora_alpha is None:  # LoftQ's factors assume a LoRA scale of 1 (peft does not rescale them)
            self.lora_alpha = self.lora_rank if self.loftq_init else self.lora_rank * 2


@dataclass
class OFTArguments:
    """finetuning_type: oft — orthogonal finetuning through peft (block-diagonal rotations of each weight's input)."""

    oft_rank: int = field(
        default=0,
        metadata={"help": "OFT: blocks per layer (0: derived from oft_block_size; set exactly one of the two).",
                  "min": 0},
    )
    oft_block_size: int = field(
        default=32,
        metadata={"help": "OFT: size of each rotation block (0: derived from oft_rank; set exactly one of the two).",
                  "min": 0},
    )
    oft_target: str = field(
        default="all",
        metadata={"help": "Modules that get OFT: 'all' linear layers but the head, or names.",
                  "domain": "'all' or module names, checked against the loaded model"},
    )
    module_dropout: float = field(
        default=0.0,
        metadata={"help": "OFT: multiplicative dropout (probability a block is the identity in a step).",
                  "min": 0, "lt": 1},
    )


@dataclass
class PreferenceArguments:
    """dpo / kto / orpo / simpo (and the KL coefficient of grpo)."""

    pref_beta: float = field(
        default=0.1, metadata={"help": "Beta of the preference loss (KL coefficient for grpo).", "min": 0}
    )
    pref_ftx: float = field(default=0.0, metadata={"help": "Weight of an added SFT loss in DPO.", "min": 0})
    pref_loss: Literal["sigmoid", "hinge", "ipo", "kto_pair", "orpo", "simpo"] = field(
        default="sigmoid", metadata={"help": "DPO loss type."}
    )
    dpo_label_smoothing: float = field(
        default=0.0, metadata={"help": "Robust DPO label smoothing.", "min": 0, "max": 0.5}
    )
    kto_chosen_weight: float = field(default=1.0, metadata={"help": "KTO weight of desirable examples.", "min": 0})
    kto_rejected_weight: float = field(default=1.0, metadata={"help": "KTO weight of undesirable examples.", "min": 0})
    simpo_gamma: float = field(default=0.5, metadata={"help": "SimPO target reward margin.", "min": 0})
    ld_alpha: float | None = field(
        default=None,
        metadata={"help": "LD-DPO (dpo losses, through trl): weight of the log-probabilities of response tokens past "
                          "the shorter response's length (1: plain DPO, 0: those tokens ignored).", "min": 0, "max": 1},
    )
    ref_model: str | None = field(default=None, metadata={"help": "Reference model for DPO/KTO/PPO.", "domain": PATH})
    ref_model_adapters: str | None = field(
        default=None, metadata={"help": "Adapters of the reference model.", "domain": PATH}
    )
    ref_model_quantization_bit: int | None = field(
        default=None, metadata={"help": "Quantize the reference model.", "choices": (4, 8)}
    )


@dataclass
class RLArguments:
    """ppo and grpo: reward model or reward functions, PPO's optimisation, GRPO's group size."""

    reward_model: str | None = field(
        default=None, metadata={"help": "Reward model path, adapter or http(s) API.", "domain": PATH}
    )
    reward_model_adapters: str | None = field(
        default=None, metadata={"help": "Adapters of the reward model.", "domain": PATH}
    )
    reward_model_quantization_bit: int | None = field(
        default=None, metadata={"help": "Quantize the reward model.", "choices": (4, 8)}
    )
    reward_model_type: Literal["lora", "full", "api"] = field(default="lora", metadata={"help": "Reward model kind."})
    ppo_buffer_size: int = field(default=1, metadata={"help": "PPO: mini-batches per experience buffer.", "min": 1})
    ppo_epochs: int = field(default=4, metadata={"help": "PPO: optimisation epochs per buffer.", "min": 1})
    ppo_score_norm: bool = field(default=False, metadata={"help": "PPO: normalize scores."})
    ppo_target: float = field(default=6.0, metadata={"help": "PPO: target KL for adaptive control.", "gt": 0})
    ppo_whiten_rewards: bool = field(default=False, metadata={"help": "PPO: whiten rewards before GAE."})
    # grpo (beyond LLaMA-Factory)
    reward_funcs: str | None = field(
        default=None,
        metadata={"help": "GRPO reward functions: path/file.py:function or module:function, comma separated.",
                  "domain": "function references, checked when they are imported"},
    )
    num_generations: int = field(default=4, metadata={"help": "GRPO completions per prompt.", "min": 2})


@dataclass
class MultimodalFinetuningArguments:
    """Which parts of a vision-language model train (accepted for LLaMA-Factory configs)."""

    freeze_vision_tower: bool = field(default=True, metadata={"help": "Multimodal: keep the vision tower frozen."})
    freeze_multi_modal_projector: bool = field(default=True, metadata={"help": "Multimodal: freeze the projector."})
    freeze_language_model: bool = field(default=False, metadata={"help": "Multimodal: freeze the LLM."})


@dataclass
class GaloreArguments:
    """use_galore: GaLore, gradient low-rank projection (package galore-torch, through transformers)."""

    use_galore: bool = field(default=False, metadata={"help": "Train with the GaLore optimizer (full/freeze)."})
    galore_target: str = field(
        default="all",
        metadata={"help": "GaLore: linear modules whose gradients are projected ('all' but the head, or names).",
                  "domain": "'all' or module names, checked against the loaded model"},
    )
    galore_rank: int = field(default=16, metadata={"help": "GaLore: rank of the projected gradients.", "min": 1})
    galore_update_interval: int = field(
        default=200, metadata={"help": "GaLore: steps between projection updates.", "min": 1}
    )
    galore_scale: float = field(default=2.0, metadata={"help": "GaLore: scale of the projected update.", "gt": 0})
    galore_proj_type: Literal["std", "reverse_std", "right", "left", "full"] = field(
        default="std", metadata={"help": "GaLore: projection type."}
    )
    galore_layerwise: bool = field(
        default=False, metadata={"help": "GaLore: one optimizer per parameter, stepped in backward (less memory)."}
    )


@dataclass
class ApolloArguments:
    """use_apollo: APOLLO, SGD-like memory with AdamW-level updates (package apollo-torch, through transformers)."""

    use_apollo: bool = field(default=False, metadata={"help": "Train with the APOLLO optimizer (full/freeze)."})
    apollo_target: str = field(
        default="all",
        metadata={"help": "APOLLO: linear modules it applies to ('all' but the head, or names).",
                  "domain": "'all' or module names, checked against the loaded model"},
    )
    apollo_rank: int = field(default=16, metadata={"help": "APOLLO: rank of the auxiliary space.", "min": 1})
    apollo_update_interval: int = field(
        default=200, metadata={"help": "APOLLO: steps between projection updates.", "min": 1}
    )
    apollo_scale: float = field(default=32.0, metadata={"help": "APOLLO: scaling coefficient.", "gt": 0})
    apollo_proj: Literal["svd", "random"] = field(default="random", metadata={"help": "APOLLO: projection."})
    apollo_proj_type: Literal["std", "right", "left"] = field(
        default="std", metadata={"help": "APOLLO: projection type."}
    )
    apollo_scale_type: Literal["channel", "tensor"] = field(
        default="channel", metadata={"help": "APOLLO: scaling per channel or per tensor."}
    )
    apollo_layerwise: bool = field(
        default=False, metadata={"help": "APOLLO: one optimizer per parameter, stepped in backward (less memory)."}
    )


@dataclass
class BAdamArguments:
    """use_badam: BAdam, block coordinate descent with Adam (package badam): one block of weights trains at a time."""

    use_badam: bool = field(default=False, metadata={"help": "Train with BAdam (full finetuning, one block at a time)."})
    badam_mode: Literal["layer", "ratio"] = field(
        default="layer", metadata={"help": "BAdam: switch whole layers ('layer') or train a ratio of each weight ('ratio')."}
    )
    badam_start_block: int | None = field(
        default=None, metadata={"help": "BAdam layer mode: index of the first block to train.", "min": 0}
    )
    badam_switch_mode: Literal["ascending", "descending", "random", "fixed"] = field(
        default="ascending", metadata={"help": "BAdam layer mode: order in which blocks take turns."}
    )
    badam_switch_interval: int = field(
        default=50,
        metadata={"help": "BAdam layer mode: optimizer steps per block (-1: never switch).", "min": -1, "nonzero": True},
    )
    badam_update_ratio: float = field(
        default=0.05, metadata={"help": "BAdam ratio mode: share of each weight's entries that train.", "gt": 0, "max": 1}
    )
    badam_mask_mode: Literal["adjacent", "scatter"] = field(
        default="adjacent", metadata={"help": "BAdam ratio mode: adjacent or scattered trainable entries."}
    )
    badam_verbose: int = field(
        default=0, metadata={"help": "BAdam: 0 quiet, 1 print the active block, 2 also its parameters.",
                             "choices": (0, 1, 2)}
    )


@dataclass
class SwanLabArguments:
    """use_swanlab: log the run to SwanLab (transformers' SwanLab integration)."""

    use_swanlab: bool = field(default=False, metadata={"help": "Log to SwanLab (adds swanlab to report_to)."})
    swanlab_project: str | None = field(
        default="llamafactory", metadata={"help": "SwanLab project name.", "domain": FREE}
    )
    swanlab_run_name: str | None = field(
        default=None, metadata={"help": "SwanLab experiment name (default: run_name).", "domain": FREE}
    )
    swanlab_mode: Literal["cloud", "local"] = field(default="cloud", metadata={"help": "SwanLab mode."})
    swanlab_api_key: str | None = field(
        default=None, metadata={"help": "SwanLab API key (cloud mode).", "domain": "a secret token"}
    )
    swanlab_logdir: str | None = field(
        default=None, metadata={"help": "Folder for SwanLab's local logs.", "domain": PATH}
    )


@flat_groups
@dataclass
class FinetuningArguments:
    stage: Stage = field(default="sft", metadata={"help": "Training stage: pt, sft, rm, dpo, kto, orpo, simpo, ppo, grpo."})
    finetuning_type: Literal["lora", "oft", "freeze", "full"] = field(
        default="lora",
        metadata={"help": "What is trained: lora or oft adapters, some layers (freeze), or all (full)."},
    )
    lora: LoraArguments = group_field(LoraArguments, "finetuning_type: lora")
    oft: OFTArguments = group_field(OFTArguments, "finetuning_type: oft")
    freeze: FreezeArguments = group_field(FreezeArguments, "finetuning_type: freeze")
    preference: PreferenceArguments = group_field(PreferenceArguments, "stages dpo, kto, orpo, simpo")
    rl: RLArguments = group_field(RLArguments, "stages ppo, grpo")
    multimodal: MultimodalFinetuningArguments = group_field(MultimodalFinetuningArguments, "vision-language models")
    galore: GaloreArguments = group_field(GaloreArguments, "use_galore: GaLore optimizer")
    apollo: ApolloArguments = group_field(ApolloArguments, "use_apollo: APOLLO optimizer")
    badam: BAdamArguments = group_field(BAdamArguments, "use_badam: BAdam optimizer")
    swanlab: SwanLabArguments = group_field(SwanLabArguments, "use_swanlab: SwanLab logging")
    # outputs and misc
    plot_loss: bool = field(default=False, metadata={"help": "Save loss plots to output_dir."})
    compute_accuracy: bool = field(
        default=False, metadata={"help": "sft: token accuracy of the evaluation set (eval_accuracy)."}
    )
    disable_shuffling: bool = field(
        default=False, metadata={"help": "Read the training set in its order (no shuffling), every stage."}
    )
    use_dft_loss: bool = field(
        default=False,
        metadata={"help": "sft: Dynamic Fine-Tuning loss, each token's cross-entropy weighted by its detached probability."},
    )
    use_asft_loss: bool = field(
        default=False,
        metadata={"help": "sft: ASFT loss, the DFT loss plus asft_alpha x KL(reference || model) per token."},
    )
    asft_alpha: float = field(default=0.1, metadata={"help": "ASFT: weight of the KL term.", "min": 0})
    use_eaft_loss: bool = field(
        default=False,
        metadata={"help": "sft: EAFT loss, each token's cross-entropy weighted by (top-20 entropy / 3) ** eaft_alpha."},
    )
    eaft_alpha: float = field(default=1.0, metadata={"help": "EAFT: power of the entropy weight.", "min": 0})
    pure_bf16: bool = field(
        default=False,
        metadata={"help": "Train in pure bf16 (CUDA GPUs with bf16): weights load in bf16 and the trained ones stay "
                          "bf16 (no fp32 copies; LLaMA-Factory's pure_bf16)."},
    )
    use_adam_mini: bool = field(
        default=False, metadata={"help": "Train with Adam-mini (one learning rate per parameter block; package adam-mini)."}
    )
    use_muon: bool = field(
        default=False,
        metadata={"help": "Train with Muon (torch.optim.Muon) on 2-D hidden weights, AdamW on the rest."},
    )
    early_stopping_steps: int | None = field(
        default=None,
        metadata={"help": "Stop when metric_for_best_model (eval_loss) has not improved for N evaluations.",
                  "min": 1},
    )
    include_effective_tokens_per_second: bool = field(default=False, metadata={"help": "Log effective tokens/s."})
    use_llama_pro: bool = field(
        default=False,
        metadata={"help": "LLaMA Pro: train only the blocks `tunery expand` added (freeze_trainable_layers = "
                          "num_expand; freeze, lora or oft)."},
    )
    fast_path: bool = field(
        default=True,
        metadata={"help": "pt/sft: padding-free batches, per-example attention and a chunked loss (same losses, less time and memory); false = the library's padded path."},
    )
    dry_run: bool = field(default=False, metadata={"help": "Resolve model and data, print the plan, do not train."})

    def __post_init__(self) -> None:
        if self.stage in ("orpo", "simpo"):
            # LLaMA-Factory spells these as dpo + pref_loss; Tunery accepts both.
            self.preference.pref_loss = self.stage

    @property
    def lora_targets(self) -> list[str]:
        return split_list(self.lora.lora_target)

    @property
    def uses_adapter(self) -> bool:
        """True for the peft adapter methods (lora, oft): training saves an adapter, not a model."""
        return self.finetuning_type in ("lora", "oft")
