"""The builtin templates, by LLaMA-Factory's names, as data.

Each spec whose ``official`` is set renders byte-identical text to that model's official chat
template on plain conversations (tests/unit/test_templates_official.py checks it against the
official Jinja templates). The others (default, empty, alpaca, vicuna, falcon, fewshot, and
qwen3_nothink, whose Qwen3-Instruct-2507 template is plain ChatML) have no official template in the
reference set; tests/unit/test_templates_lf_names.py pins what each renders.

A name means what the same name means in LLaMA-Factory (the same model family and mode); where
LLaMA-Factory's text differs from the model's official template only in details (spaces its
per-segment tokenization adds, a default system prompt), the official template wins and
docs/templates.md lists the difference.
"""

from __future__ import annotations

from tunery.data.templates.spec import SpecTemplate, TemplateSpec

_CHATML = dict(
    system="<|im_start|>system\n{content}<|im_end|>\n",
    user="<|im_start|>user\n{content}<|im_end|>\n",
    gen="<|im_start|>assistant\n",
    assistant="{content}<|im_end|>",
    assistant_tail="\n",
    tool="\n<tool_response>\n{content}\n</tool_response>",
    tool_open="<|im_start|>user",
    tool_close="<|im_end|>\n",
    stop_words=("<|im_end|>",),
    tool_format="qwen",
)
_DEEPSEEK3 = dict(
    prefix="<｜begin▁of▁sentence｜>",
    user="<｜User｜>{content}",
    gen="<｜Assistant｜>",
    assistant="{content}<｜end▁of▁sentence｜>",
    tool="<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>{content}<｜tool▁output▁end｜><｜tool▁outputs▁end｜>",
    stop_words=("<｜end▁of▁sentence｜>",),
)
_GEMMA = dict(
    prefix="<bos>",
    system=None,
    user="<start_of_turn>user\n{content}<end_of_turn>\n",
    gen="<start_of_turn>model\n",
    assistant="{content}<end_of_turn>",
    assistant_tail="\n",
    tool="<start_of_turn>user\n{content}<end_of_turn>\n",
    stop_words=("<end_of_turn>",),
    strip=True,
)

SPECS: list[TemplateSpec] = [
    TemplateSpec(
        name="default",
        system="System: {content}{eos}\n",
        user="Human: {content}{eos}\n",
        gen="Assistant:",
        assistant="{content}{eos}",
        assistant_tail="\n",
        tool="Observation: {content}{eos}\n",
        note="generic format for models without a chat template (LLaMA-Factory's: eos after every turn)",
    ),
    TemplateSpec(name="empty", note="plain concatenation, no markers at all"),
    TemplateSpec(
        name="alpaca",
        system="{content}\n\n",
        user="### Instruction:\n{content}\n\n",
        gen="### Response:\n",
        assistant="{content}{eos}",
        assistant_tail="\n\n",
        default_system="Below is an instruction that describes a task. "
                       "Write a response that appropriately completes the request.",
        note="Stanford Alpaca prompt",
    ),
    TemplateSpec(
        name="vicuna",
        system="{content} ",
        user="USER: {content} ",
        gen="ASSISTANT:",
        assistant=" {content}{eos}",
        default_system="A chat between a curious user and an artificial intelligence assistant. "
                       "The assistant gives helpful, detailed, and polite answers to the user's questions.",
        note="Vicuna v1.1 prompt",
    ),
    TemplateSpec(name="chatml", official="openbmb/MiniCPM3-4B", **_CHATML,
                 note="ChatML without a default system prompt"),
    TemplateSpec(
        name="llama2",
        official="meta-llama/Llama-2-7b-chat-hf",
        system=None,
        system_in_user="<<SYS>>\n{system}\n<</SYS>>\n\n{content}",
        user="<s>[INST] {content} [/INST]",
        assistant=" {content} </s>",
        stop_words=("</s>",),
        strip=True,
    ),
    TemplateSpec(
        name="llama3",
        official="meta-llama/Meta-Llama-3-8B-Instruct",
        prefix="<|begin_of_text|>",
        system="<|start_header_id|>system<|end_header_id|>\n\n{content}<|eot_id|>",
        user="<|start_header_id|>user<|end_header_id|>\n\n{content}<|eot_id|>",
        gen="<|start_header_id|>assistant<|end_header_id|>\n\n",
        assistant="{content}<|eot_id|>",
        tool="<|start_header_id|>ipython<|end_header_id|>\n\n{content}<|eot_id|>",
        stop_words=("<|eot_id|>", "<|eom_id|>"),
        tool_format="llama3",
        strip=True,
        note="Llama 3.1/3.2 official templates add a 'Cutting Knowledge Date' system header: use auto for them",
    ),
    TemplateSpec(
        name="mistral",
        official="mistralai/Mixtral-8x7B-Instruct-v0.1",
        prefix="<s>",
        system=None,
        user="[INST] {content} [/INST]",
        assistant="{content}</s>",
        tool="[TOOL_RESULTS] {content}[/TOOL_RESULTS]",
        stop_words=("</s>",),
        tool_format="mistral",
        note="the official template rejects a system message; here it is folded into the first user turn. "
             "Mistral v0.3 and Nemo space [INST] differently: use auto for them",
    ),
    TemplateSpec(name="qwen", official="Qwen/Qwen2.5-7B-Instruct", **_CHATML,
                 default_system="You are Qwen, created by Alibaba Cloud. You are a helpful assistant."),
    TemplateSpec(name="qwen3", official="Qwen/Qwen3-0.6B", **_CHATML, thinking="qwen3",
                 note="hybrid reasoning models; `enable_thinking: false` puts the empty <think> block in the prompt"),
    TemplateSpec(name="qwen3_nothink", **_CHATML,
                 note="Qwen3 instruct (non-reasoning, e.g. *-Instruct-2507) models: plain ChatML, no <think> "
                      "tokens anywhere (as in LLaMA-Factory)"),
    TemplateSpec(name="gemma", official="google/gemma-2-2b-it", **_GEMMA,
                 note="the official template rejects a system message; here it is folded into the first user turn"),
    TemplateSpec(name="gemma3", official="google/gemma-3-1b-it", **_GEMMA),
    TemplateSpec(
        name="phi",
        official="microsoft/Phi-3.5-mini-instruct",
        system="<|system|>\n{content}<|end|>\n",
        user="<|user|>\n{content}<|end|>\n",
        gen="<|assistant|>\n",
        assistant="{content}<|end|>",
        assistant_tail="\n",
        end="<|endoftext|>",
        tool="<|user|>\n{content}<|end|>\n",
        stop_words=("<|end|>",),
    ),
    TemplateSpec(
        name="phi4",
        official="microsoft/phi-4",
        system="<|im_start|>system<|im_sep|>{content}<|im_end|>",
        user="<|im_start|>user<|im_sep|>{content}<|im_end|>",
        gen="<|im_start|>assistant<|im_sep|>",
        assistant="{content}<|im_end|>",
        tool="<|im_start|>user<|im_sep|>{content}<|im_end|>",
        stop_words=("<|im_end|>",),
    ),
    TemplateSpec(
        name="deepseek",
        official="deepseek-ai/deepseek-llm-7b-chat",
        prefix="<｜begin▁of▁sentence｜>",
        system="{content}\n\n",
        user="User: {content}\n\n",
        gen="Assistant:",
        assistant=" {content}<｜end▁of▁sentence｜>",
        stop_words=("<｜end▁of▁sentence｜>",),
    ),
    TemplateSpec(name="deepseek3", official="deepseek-ai/DeepSeek-V3", **_DEEPSEEK3),
    TemplateSpec(name="deepseekr1", official="deepseek-ai/DeepSeek-R1", **_DEEPSEEK3,
                 note="earlier replies keep their <think> text (the official template drops it from history)"),
    TemplateSpec(
        name="glm4",
        official="THUDM/glm-4-9b-chat",
        prefix="[gMASK]<sop>",
        system="<|system|>\n{content}",
        user="<|user|>\n{content}",
        gen="<|assistant|>",
        assistant="\n{content}",
        tool="<|observation|>\n{content}",
        stop_words=("<|user|>", "<|observation|>"),
        note="GLM-4 has no end-of-turn token: generation stops at <|user|> or <|observation|>",
    ),
    TemplateSpec(
        name="yi",
        official="01-ai/Yi-1.5-6B-Chat",
        system="{content}",
        user="<|im_start|>user\n{content}<|im_end|>\n",
        gen="<|im_start|>assistant\n",
        assistant="{content}<|im_end|>",
        assistant_tail="\n",
        stop_words=("<|im_end|>",),
        note="the official template writes the system prompt bare, before the first turn",
    ),
    TemplateSpec(name="intern2", official="internlm/internlm2-chat-7b", prefix="<s>", **_CHATML),
    TemplateSpec(
        name="zephyr",
        official="HuggingFaceH4/zephyr-7b-beta",
        system="<|system|>\n{content}</s>\n",
        user="<|user|>\n{content}</s>\n",
        gen="<|assistant|>\n",
        assistant="{content}</s>",
        assistant_tail="\n",
        stop_words=("</s>",),
    ),
    TemplateSpec(
        name="cohere",
        official="CohereForAI/c4ai-command-r-08-2024",
        prefix="<BOS_TOKEN>",
        system="<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>{content}<|END_OF_TURN_TOKEN|>",
        user="<|START_OF_TURN_TOKEN|><|USER_TOKEN|>{content}<|END_OF_TURN_TOKEN|>",
        gen="<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>",
        assistant="{content}<|END_OF_TURN_TOKEN|>",
        tool="<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>{content}<|END_OF_TURN_TOKEN|>",
        stop_words=("<|END_OF_TURN_TOKEN|>",),
        strip=True,
    ),
    TemplateSpec(
        name="granite3",
        official="ibm-granite/granite-3.0-2b-instruct",
        system="<|start_of_role|>system<|end_of_role|>{content}<|end_of_text|>\n",
        user="<|start_of_role|>user<|end_of_role|>{content}<|end_of_text|>\n",
        gen="<|start_of_role|>assistant<|end_of_role|>",
        assistant="{content}<|end_of_text|>",
        assistant_tail="\n",
        tool="<|start_of_role|>tool_response<|end_of_role|>{content}<|end_of_text|>\n",
        stop_words=("<|end_of_text|>",),
    ),
    TemplateSpec(
        name="olmo",
        official="allenai/OLMo-2-1124-7B-Instruct",
        prefix="<|endoftext|>",
        system="<|system|>\n{content}\n",
        user="<|user|>\n{content}\n",
        gen="<|assistant|>\n",
        assistant="{content}<|endoftext|>",
        assistant_sep="\n",
        tool="<|user|>\n{content}\n",
        stop_words=("<|endoftext|>",),
    ),
    TemplateSpec(
        name="falcon",
        system="System: {content}\n",
        user="User: {content}\n",
        gen="Falcon:",
        assistant=" {content}{eos}",
        assistant_tail="\n",
        note="Falcon-Instruct prompt; the model ships no chat template",
    ),
    TemplateSpec(
        name="fewshot",
        system="{content}\n\n",
        assistant="{content}",
        assistant_sep="\n\n",
        note="base models: question and answer concatenated, examples separated by a blank line",
    ),
]

BUILTINS: dict[str, TemplateSpec] = {spec.name: spec for spec in SPECS}


def build_builtin(name: str, tokenizer=None, *, default_system: str | None = None, enable_thinking: bool | None = True,
                  tool_format: str | None = None) -> SpecTemplate:
    """A ready template for builtin ``name``; the tokenizer supplies ``{bos}``/``{eos}`` and stop ids."""
    spec = BUILTINS[name]
    eos = (getattr(tokenizer, "eos_token", None) or "") if tokenizer is not None else ""
    bos = (getattr(tokenizer, "bos_token", None) or "") if tokenizer is not None else ""
    stops = list(spec.stop_words) or ([eos] if eos else [])
    return SpecTemplate(
        name=name,
        default_system=default_system if default_system is not None else (spec.default_system or None),
        stop_words=stops,
        tool_format=tool_format or spec.tool_format,
        enable_thinking=enable_thinking,
        spec=spec,
        bos=bos,
        eos=eos,
    )
