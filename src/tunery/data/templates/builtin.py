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
# ChatML as LLaMA-Factory's plain ChatML family writes it: tool results in a "tool" turn
_CHATML_TOOL = dict(
    system="<|im_start|>system\n{content}<|im_end|>\n",
    user="<|im_start|>user\n{content}<|im_end|>\n",
    gen="<|im_start|>assistant\n",
    assistant="{content}<|im_end|>",
    assistant_tail="\n",
    tool="<|im_start|>tool\n{content}<|im_end|>\n",
    stop_words=("<|im_end|>",),
)
# the Qwen-style ChatML of LLaMA-Factory's MiMo templates: each tool result in its own user turn
_CHATML_QWEN_TOOL = dict(_CHATML_TOOL, tool="<|im_start|>user\n<tool_response>\n{content}\n</tool_response><|im_end|>\n",
                         tool_format="qwen")
_GLM4 = dict(
    prefix="[gMASK]<sop>",
    system="<|system|>\n{content}",
    user="<|user|>\n{content}",
    gen="<|assistant|>",
    assistant="\n{content}",
    tool="<|observation|>\n{content}",
    stop_words=("<|user|>", "<|observation|>"),
)
_GLM4_MOE = dict(_GLM4, thinking="lf")
_SEED = dict(
    system="{bos}system\n{content}{eos}",
    user="{bos}user\n{content}{eos}",
    gen="{bos}assistant\n",
    assistant="{content}{eos}",
    tool="{bos}user\n{content}{eos}",
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
        user="### Instruction:\n{content}\n\n",
        gen="### Response:\n",
        assistant="{content}{eos}",
        assistant_tail="\n\n",
        default_system="Below is an instruction that describes a task. "
                       "Write a response that appropriately completes the request.\n\n",
        note="Stanford Alpaca prompt as LLaMA-Factory writes it: the default system prompt ends with a blank "
             "line, a system prompt of your own is written as is",
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
    TemplateSpec(name="smollm2", official="HuggingFaceTB/SmolLM2-135M-Instruct", **_CHATML,
                 default_system="You are a helpful AI assistant named SmolLM, trained by Hugging Face",
                 note="the official default system prompt (LLaMA-Factory's ends with a full stop)"),
    TemplateSpec(name="qwen3", official="Qwen/Qwen3-0.6B", **_CHATML, thinking="qwen3",
                 note="hybrid reasoning models; `enable_thinking: false` puts the empty <think> block in the prompt"),
    TemplateSpec(name="qwen3_nothink", **_CHATML,
                 note="Qwen3 instruct (non-reasoning, e.g. *-Instruct-2507) models: plain ChatML, no <think> "
                      "tokens anywhere (as in LLaMA-Factory)"),
    TemplateSpec(name="gemma", official="google/gemma-2-2b-it", **_GEMMA,
                 note="the official template rejects a system message; here it is folded into the first user turn"),
    TemplateSpec(name="gemma2", official="google/gemma-2-2b-it", **dict(_GEMMA, stop_words=("<eos>", "<end_of_turn>")),
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
        **_GLM4,
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
        user="User: {content}\n",
        gen="Falcon:",
        assistant_tail="\n",
        tool="User: {content}\n",
        note="Falcon-Instruct prompt as LLaMA-Factory writes it; the model ships no chat template",
    ),
    TemplateSpec(
        name="fewshot",
        assistant="{content}",
        assistant_tail="\n\n",
        note="base models: question and answer concatenated, examples separated by a blank line",
    ),
]

# -- the other text templates of LLaMA-Factory 0.9.5, as it renders them (no official template in the
# reference set). tests/unit/data/templates/test_templates_lf_renders.py checks each against
# LLaMA-Factory's own text (tests/data/lf_template_renders.json).
_LF_NOTE = "as LLaMA-Factory renders it"
SPECS += [
    TemplateSpec(name="bailing", system="<role>SYSTEM</role>{content}", user="<role>HUMAN</role>{content}",
                 gen="<role>ASSISTANT</role>", tool="<role>OBSERVATION</role>{content}",
                 stop_words=("<|endoftext|>",), note="Ling (Bailing) v1"),
    TemplateSpec(name="bailing_v2", system="<role>SYSTEM</role>{content}<|role_end|>",
                 user="<role>HUMAN</role>{content}<|role_end|>", gen="<role>ASSISTANT</role>",
                 assistant="{content}<|role_end|>",
                 tool="<role>OBSERVATION</role>\n<tool_response>\n{content}\n</tool_response><|role_end|>",
                 stop_words=("<|endoftext|>",),
                 note="Ling 2.0; tool calls use the default tool format (LLaMA-Factory: its 'ling' format)"),
    TemplateSpec(name="breeze", prefix="{bos}", user="[INST] {content} [/INST] ", tool="[INST] {content} [/INST] ",
                 note="Breeze-7B-Instruct"),
    TemplateSpec(name="chatglm3", prefix="[gMASK]sop", system="<|system|>\n{content}", user="<|user|>\n{content}",
                 gen="<|assistant|>", assistant="\n{content}", tool="<|observation|>\n{content}",
                 stop_words=("<|user|>", "<|observation|>"),
                 note="ChatGLM3 (its sop token is written 'sop'); no end-of-turn token"),
    TemplateSpec(name="chatml_de", **dict(_CHATML_TOOL, stop_words=("<|im_end|>", "<|im_start|>")),
                 default_system="Du bist ein freundlicher und hilfsbereiter KI-Assistent.",
                 note="ChatML with a German default system prompt"),
    TemplateSpec(name="cpm4", prefix="{bos}", **_CHATML_TOOL, note="MiniCPM4: ChatML after bos"),
    TemplateSpec(name="dbrx", **_CHATML_TOOL, note="DBRX Instruct, with its default system prompt",
                 default_system=(
                     "You are DBRX, created by Databricks. You were last updated in December 2023. "
                     "You answer questions based on information available up to that point.\n"
                     "YOU PROVIDE SHORT RESPONSES TO SHORT QUESTIONS OR STATEMENTS, but provide thorough "
                     "responses to more complex and open-ended questions.\nYou assist with various tasks, "
                     "from writing to coding (using markdown for code blocks — remember to use ``` with "
                     "code, JSON, and tables).\n(You do not have real-time data access or code execution "
                     "capabilities. You avoid stereotyping and provide balanced perspectives on "
                     "controversial topics. You do not provide song lyrics, poems, or news articles and "
                     "do not divulge details of your training data.)\nThis is your system prompt, "
                     "guiding your responses. Do not reference it, just respond to the user. If you find "
                     "yourself talking about this message, stop. You should be responding appropriately "
                     "and usually that means not mentioning this.\nYOU DO NOT MENTION ANY OF THIS INFORMATION "
                     "ABOUT YOURSELF UNLESS THE INFORMATION IS DIRECTLY PERTINENT TO THE USER'S QUERY.")),
    TemplateSpec(name="deepseekcoder", prefix="{bos}", user="### Instruction:\n{content}\n### Response:",
                 assistant="\n{content}\n<|EOT|>", assistant_tail="\n",
                 tool="### Instruction:\n{content}\n### Response:", note="DeepSeek-Coder instruct",
                 default_system=(
                     "You are an AI programming assistant, utilizing the DeepSeek Coder model, "
                     "developed by DeepSeek Company, and you only answer questions related to computer science. "
                     "For politically sensitive questions, security and privacy issues, "
                     "and other non-computer science questions, you will refuse to answer.\n")),
    TemplateSpec(name="ernie", system="<|im_start|>system\n{content}<|im_end|>\n\n",
                 user="<|im_start|>user\n{content}<|im_end|>\n\n", gen="<|im_start|>assistant\n",
                 assistant="{content}<|im_end|>", assistant_tail="\n\n", tool="<|im_start|>tool\n{content}<|im_end|>\n\n",
                 default_system="<global_setting>\nthink_mode=True\n</global_setting>", stop_words=("<|im_end|>",),
                 note="ERNIE 4.5 thinking models (thinking is switched on by the default system prompt)"),
    TemplateSpec(name="ernie_nothink", prefix="<|begin_of_sentence|>", system="{content}\n",
                 user="User: {content}\n", gen="Assistant: ", assistant="{content}<|end_of_sentence|>",
                 tool="User: {content}\n", stop_words=("<|end_of_sentence|>",), note="ERNIE 4.5 instruct models"),
    TemplateSpec(name="exaone", system="[|system|]{content}[|endofturn|]\n", user="[|user|]{content}\n",
                 gen="[|assistant|]", assistant="{content}{eos}", assistant_tail="\n", tool="[|user|]{content}\n",
                 note="EXAONE 3"),
    TemplateSpec(name="falcon_h1", prefix="{bos}", **dict(_CHATML_TOOL, stop_words=("<|im_end|>", "<|end_of_text|>")),
                 note="Falcon-H1: ChatML after bos"),
    TemplateSpec(name="hy3", prefix="{bos}", user="<｜hy_User｜>{content}", gen="<｜hy_Assistant｜>",
                 assistant="{content}<｜hy_eos｜>", tool="<｜hy_User｜>{content}", stop_words=("<｜hy_eos｜>",),
                 thinking="lf", thought=("<think>", "</think>"), note="Hunyuan 3 (reasoning)"),
    TemplateSpec(name="glm4_moe", **_GLM4_MOE, note="GLM-4.5/4.6 (reasoning); no end-of-turn token"),
    TemplateSpec(name="glm4_7", **_GLM4_MOE, thought=("<think>", "</think>"), empty_thought="</think>",
                 note="GLM-4.7 (reasoning): a reply without reasoning gets a bare </think>"),
    TemplateSpec(name="glmz1", **_GLM4_MOE, note="GLM-Z1 (reasoning); no end-of-turn token"),
    TemplateSpec(name="aeva", **_GLM4_MOE, thought=("<think>", "</think>"), empty_thought="</think>",
                 default_system="You are an AI assistant named Aeva created by Zongzhi Lou. "
                                "Your answer should be friendly, unbiased, faithful, informative and detailed.",
                 note="GLM-4.7 format with Aeva's default system prompt"),
    TemplateSpec(name="gpt_oss", system="<|start|>system<|message|>{content}<|end|>",
                 user="<|start|>user<|message|>{content}<|end|>", gen="<|start|>assistant",
                 tool="<|start|>user<|message|>{content}<|end|>",
                 default_system="You are ChatGPT, a large language model trained by OpenAI.",
                 thinking="lf", thought=("<|channel|>analysis<|message|>",
                                         "<|end|><|start|>assistant<|channel|>final<|message|>"),
                 note="gpt-oss as LLaMA-Factory writes it (not the full harmony format of the official template); "
                      "reasoning is the analysis channel"),
    TemplateSpec(name="granite4", system="<|start_of_role|>system<|end_of_role|>{content}<|end_of_text|>\n",
                 user="<|start_of_role|>user<|end_of_role|>{content}<|end_of_text|>\n",
                 gen="<|start_of_role|>assistant<|end_of_role|>", assistant="{content}<|end_of_text|>",
                 assistant_tail="\n", tool="<|start_of_role|>tool<|end_of_role|>{content}<|end_of_text|>\n",
                 tool_gen="<|start_of_role|>assistant\n",
                 default_system="You are Granite, developed by IBM. You are a helpful AI assistant.",
                 stop_words=("<|end_of_text|>",), note="Granite 4"),
    TemplateSpec(name="index", system="<unk>{content}", user="reserved_0{content}reserved_1",
                 tool="reserved_0{content}reserved_1", note="Index-1.9B chat"),
    TemplateSpec(name="hunyuan", prefix="<|startoftext|>", system="{content}<|extra_4|>", user="{content}<|extra_0|>",
                 assistant="{content}<|eos|>", tool="{content}<|extra_0|>", stop_words=("<|eos|>",),
                 note="Hunyuan-A13B"),
    TemplateSpec(name="hunyuan_small", prefix="<｜hy_begin▁of▁sentence｜>", system="{content}<｜hy_place▁holder▁no▁3｜>",
                 user="<｜hy_User｜>{content}<｜hy_place▁holder▁no▁8｜>",
                 assistant="{content}<｜hy_place▁holder▁no▁2｜>",
                 tool="<｜hy_User｜>{content}<｜hy_place▁holder▁no▁8｜>",
                 stop_words=("<｜hy_place▁holder▁no▁2｜>",), note="Hunyuan dense small models"),
    TemplateSpec(name="lfm2", **dict(_CHATML_TOOL, tool=(
                     "<|im_start|>tool\n<|tool_response_start|>{content}<|tool_response_end|><|im_end|>\n")),
                 default_system="You are a helpful AI assistant.",
                 note="LFM2; tool calls use the default tool format (LLaMA-Factory: its 'lfm2' format)"),
    TemplateSpec(name="llama2_zh", system=None, system_in_user="<<SYS>>\n{system}\n<</SYS>>\n\n{content}",
                 user="{bos}[INST] {content} [/INST]", assistant="{content}{eos}",
                 tool="{bos}[INST] {content} [/INST]",
                 default_system="You are a helpful assistant. 你是一个乐于助人的助手。",
                 note="Chinese Llama 2 (LLaMA-Factory's llama2 spacing, a bilingual default system prompt)"),
    TemplateSpec(name="moonlight", system="<|im_system|>system<|im_middle|>{content}<|im_end|>",
                 user="<|im_user|>user<|im_middle|>{content}<|im_end|>",
                 gen="<|im_assistant|>assistant<|im_middle|>", assistant="{content}<|im_end|>",
                 tool="<|im_user|>user<|im_middle|>{content}<|im_end|>", stop_words=("<|im_end|>",),
                 default_system="You are a helpful assistant provided by Moonshot-AI.", note="Moonlight (Moonshot)"),
    TemplateSpec(name="mimo", **_CHATML_QWEN_TOOL, default_system="You are a helpful assistant.",
                 thinking="lf", note="MiMo (reasoning)"),
    TemplateSpec(name="mimo_v2", **_CHATML_QWEN_TOOL, thinking="lf", thought=("<think>", "</think>"),
                 default_system="You are MiMo, a helpful AI assistant engineered by Xiaomi.",
                 note="MiMo-V2 (reasoning)"),
    TemplateSpec(name="minimax1", system="<beginning_of_sentence>system ai_setting=assistant\n{content}<end_of_sentence>\n",
                 user="<beginning_of_sentence>user name=user\n{content}<end_of_sentence>\n",
                 gen="<beginning_of_sentence>ai name=assistant\n", assistant="{content}<end_of_sentence>",
                 assistant_tail="\n", tool="<beginning_of_sentence>tool name=tools\n{content}<end_of_sentence>\n",
                 default_system="You are a helpful assistant.", stop_words=("<end_of_sentence>",),
                 note="MiniMax-Text-01; tool calls use the default tool format (LLaMA-Factory: its 'minimax1' format)"),
    TemplateSpec(name="minimax2", system="]~!b[]~b]system\n{content}[e~[\n", user="]~b]user\n{content}[e~[\n",
                 gen="]~b]ai\n", assistant="{content}[e~[", assistant_tail="\n",
                 tool="]~b]tool\n<response>{content}</response>[e~[\n", stop_words=("[e~[",), thinking="lf",
                 default_system="You are a helpful assistant. Your name is MiniMax-M2.1 and is built by MiniMax.",
                 note="MiniMax-M2 (reasoning); tool calls use the default tool format (LLaMA-Factory: 'minimax2')"),
    TemplateSpec(name="ministral", prefix="{bos}", system=None, system_in_user="{system}\n\n{content}",
                 user="[INST]{content}[/INST]", assistant="{content}{eos}",
                 tool='[TOOL_RESULTS]{"content": {content}}[/TOOL_RESULTS]', tool_format="mistral",
                 note="Ministral / Mistral v0.3 spacing (no spaces around the [INST] text)"),
    TemplateSpec(name="openchat", prefix="{bos}", user="GPT4 Correct User: {content}{eos}",
                 gen="GPT4 Correct Assistant:", assistant="{content}{eos}",
                 tool="GPT4 Correct User: {content}{eos}", note="OpenChat 3.5"),
    TemplateSpec(name="openchat-3.6", prefix="{bos}",
                 user="<|start_header_id|>GPT4 Correct User<|end_header_id|>\n\n{content}<|eot_id|>",
                 gen="<|start_header_id|>GPT4 Correct Assistant<|end_header_id|>\n\n", assistant="{content}{eos}",
                 tool="<|start_header_id|>GPT4 Correct User<|end_header_id|>\n\n{content}<|eot_id|>",
                 stop_words=("<|eot_id|>",), note="OpenChat 3.6 (Llama 3 based)"),
    TemplateSpec(name="opencoder", **_CHATML_TOOL, default_system="You are OpenCoder, created by OpenCoder Team.",
                 note="OpenCoder: ChatML with its default system prompt"),
    TemplateSpec(name="phi_small", system="<|system|>\n{content}<|end|>\n", user="<|user|>\n{content}<|end|>\n",
                 gen="<|assistant|>\n", assistant="{content}<|end|>", assistant_tail="\n",
                 tool="<|user|>\n{content}<|end|>\n", stop_words=("<|end|>",),
                 note="Phi-3-small; LLaMA-Factory's intended <|endoftext|> prefix writes nothing, so neither does this"),
    TemplateSpec(name="phi4_mini", system="<|system|>{content}<|end|>", user="<|user|>{content}<|end|>",
                 gen="<|assistant|>", assistant="{content}<|end|>", tool="<|user|>{content}<|end|>",
                 stop_words=("<|end|>",), note="Phi-4-mini"),
    TemplateSpec(name="sailor", system="<|im_start|>system\n{content}<|im_end|>\n",
                 user="<|im_start|>question\n{content}<|im_end|>\n", gen="<|im_start|>answer\n",
                 assistant="{content}<|im_end|>", assistant_tail="\n", tool="<|im_start|>question\n{content}<|im_end|>\n",
                 stop_words=("<|im_end|>",), note="Sailor: ChatML with question/answer roles",
                 default_system="You are an AI assistant named Sailor created by Sea AI Lab. "
                                "Your answer should be friendly, unbiased, faithful, informative and detailed."),
    TemplateSpec(name="seed_coder", **_SEED, note="Seed-Coder instruct",
                 default_system=(
                     "You are an AI programming assistant, utilizing the Seed-Coder model, developed by ByteDance "
                     "Seed, and you only answer questions related to computer science. For politically sensitive "
                     "questions, security and privacy issues, and other non-computer science questions, you will "
                     "refuse to answer.\n\n")),
    TemplateSpec(name="seed_oss", **_SEED, thinking="lf", thought=("<seed:think>", "</seed:think>"),
                 note="Seed-OSS (reasoning); tool calls use the default tool format (LLaMA-Factory: 'seed_oss')"),
    TemplateSpec(name="smollm", **dict(_CHATML_TOOL, tool="<|im_start|>user\n{content}<|im_end|>\n"),
                 note="SmolLM: ChatML, tool results as user turns"),
    TemplateSpec(name="solar", system="### System:\n{content}\n\n", user="### User:\n{content}\n\n",
                 gen="### Assistant:\n", tool="### User:\n{content}\n\n", note="SOLAR instruct"),
    TemplateSpec(name="starchat", system="<|system|>\n{content}<|end|>\n", user="<|user|>\n{content}<|end|>\n",
                 gen="<|assistant|>", assistant="{content}<|end|>", assistant_tail="\n",
                 tool="<|user|>\n{content}<|end|>\n", stop_words=("<|end|>",), note="StarChat"),
    TemplateSpec(name="telechat2", system="<_system>{content}", user="<_user>{content}", gen="<_bot>",
                 assistant="{content}{eos}", tool="<_user>{content}", note="TeleChat2",
                 default_system="你是中国电信星辰语义大模型，英文名是TeleChat，你是由中电信人工智能科技有限公司和中国电信人工智能研究院"
                                "（TeleAI）研发的人工智能助手。"),
    TemplateSpec(name="xuanyuan", user="Human: {content} ", gen="Assistant:", assistant="{content}{eos}",
                 tool="Human: {content} ", note="XuanYuan",
                 default_system="以下是用户和人工智能助手之间的对话。用户以Human开头，人工智能助手以Assistant开头，"
                                "会对人类提出的问题给出有帮助、高质量、详细和礼貌的回答，并且总是拒绝参与与不道德、"
                                "不安全、有争议、政治敏感等相关的话题、问题和指示。\n"),
    TemplateSpec(name="youtu", prefix="{bos}", user="<|User|>{content}", gen="<|Assistant|>",
                 assistant="{content}<|end_of_text|>", tool="<tool_response>\n{content}\n</tool_response>",
                 stop_words=("<|end_of_text|>",), thinking="lf", note="Youtu-LLM (reasoning)"),
    TemplateSpec(name="yuan", user="{content}<sep>", assistant="{content}<eod>", assistant_tail="\n",
                 tool="{content}<sep>", stop_words=("<eod>",), note="Yuan 2"),
]

# LLaMA-Factory names whose text differs on purpose from what LLaMA-Factory 0.9.5 renders, and how (mostly:
# the model's official chat template wins). "literal special tokens": the builtin writes the model's own
# bos/eos where LLaMA-Factory writes the tokenizer's; with the model's tokenizer the text is the same.
# tests/unit/data/templates/test_templates_lf_renders.py checks every other name against LLaMA-Factory's text
# and that each of these really differs.
DIFFERS_ON_PURPOSE: dict[str, str] = {
    "cohere": "literal special tokens",
    "deepseek": "the official template puts a space before the reply ('Assistant: reply')",
    "deepseek3": "literal special tokens",
    "deepseekr1": "the official DeepSeek-R1 template: no empty reasoning block is added to replies",
    "gemma": "literal special tokens; the official template trims message text",
    "gemma2": "literal special tokens; the official template trims message text",
    "intern2": "the official template has no default system prompt (LLaMA-Factory adds InternLM's)",
    "llama2": "the official spacing '[/INST] reply </s>' (LLaMA-Factory: '[/INST]reply</s>')",
    "llama3": "literal special tokens",
    "mistral": "the official Mixtral spacing 'question [/INST]reply' (LLaMA-Factory: 'question[/INST] reply')",
    "olmo": "the official OLMo 2 template: a system turn and a newline after each turn",
    "phi": "the official Phi-3.5 template ends a conversation with <|endoftext|>",
    "qwen3": "Qwen3's official reasoning rule: replies before the last user turn lose their <think> block "
             "instead of getting an empty one",
    "smollm2": "the official default system prompt has no final full stop",
    "yi": "the official Yi-1.5 template writes the system prompt bare, before the first turn",
    "zephyr": "the official Zephyr template: a newline after each </s>, no default system prompt",
    "vicuna": "the Vicuna v1.1 spacing ('... USER: question ASSISTANT: reply'), which is what LLaMA-Factory's "
              "piecewise tokenization produces on Vicuna's Llama tokenizer (its text has no spaces there)",
}

BUILTINS: dict[str, TemplateSpec] = {spec.name: spec for spec in SPECS}


def build_builtin(name: str, tokenizer=None, *, default_system: str | None = None, enable_thinking: bool | None = True,
                  tool_format: str | None = None, preserve_thinking: bool = False,
                  mask_history: bool = False) -> SpecTemplate:
    """A ready template for builtin ``name``; the tokenizer supplies ``{bos}``/``{eos}`` and stop ids.

    ``enable_thinking``/``preserve_thinking``/``mask_history`` only change reasoning templates
    (``spec.thinking`` set); see :meth:`SpecTemplate._reasoning`.
    """
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
        preserve_thinking=preserve_thinking,
        mask_history=mask_history,
        spec=spec,
        bos=bos,
        eos=eos,
    )
