"""Every tiny VLM family (tests/mm_models.py): placeholders expand to the processor's tokens, only the reply
is trained, and the collated batch (with the processor's media tensors) runs the model."""

from __future__ import annotations

import wave

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from tests.mm_models import FAMILIES
from tunery.data.collator import MediaCollator, PaddedCollator
from tunery.data.media import MediaEncoder, MediaSettings
from tunery.data.processors import IGNORE_INDEX, OK, ProcessSettings, process_batch
from tunery.data.template import get_template
from tunery.model.loader import model_class_for
from tunery.model.multimodal import load_processor


def _wav(path) -> str:
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(16000)
        f.writeframes((np.sin(np.linspace(0, 500, 16000)) * 9000).astype(np.int16).tobytes())
    return str(path)


@pytest.mark.parametrize("family", FAMILIES)
def test_family_expands_masks_and_runs(family, tiny_vlm_factory, reference_dir, tmp_path):
    path = tiny_vlm_factory(family)
    tokenizer = AutoTokenizer.from_pretrained(path)
    media = MediaEncoder(load_processor(path), MediaSettings())
    audio = family == "qwen2_audio"
    image = str(reference_dir / "lf" / "data" / "mllm_demo_data" / "1.jpg")
    rows = []
    for n in (1, 2):
        record = {"messages": [{"role": "user", "content": ("<audio>" if audio else "<image>") * n + "What is it?"},
                               {"role": "assistant", "content": "A thing."}],
                  "tools": None, "chosen": None, "rejected": None, "kto_tag": None, "videos": None,
                  "images": None if audio else [image] * n, "audios": [_wav(tmp_path / "a.wav")] * n if audio else None,
                  "_source": {"file": "f", "row": n}}
        out = process_batch({k: [v] for k, v in record.items()}, stage="sft", tokenizer=tokenizer,
                            template=get_template("auto", tokenizer), settings=ProcessSettings(cutoff_len=8192),
                            media=media)
        assert out["_status"] == [OK], out["_error"]
        row = {k: v[0] for k, v in out.items() if not k.startswith("_")}
        trained = [t for t, lab in zip(row["input_ids"], row["labels"]) if lab != IGNORE_INDEX]
        # the reply and its end-of-turn token(s), nothing of the prompt
        assert tokenizer.decode(trained, skip_special_tokens=True).strip() == "A thing."
        assert tokenizer.decode(trained).strip().startswith("A thing.")
        assert all(lab == IGNORE_INDEX for t, lab in zip(row["input_ids"], row["labels"]) if t in media.token_ids)
        assert media.count_media_tokens(row["input_ids"]) > 0
        rows.append(row)
    if family == "mllama":  # mllama batches one image count per example; both rows must agree
        rows = rows[:1]
    batch = MediaCollator(PaddedCollator(tokenizer.pad_token_id or 0), media)(rows)
    if family in ("qwen2_vl", "qwen2_5_vl", "gemma3"):  # media positions for 3-D rope / image attention
        key = "token_type_ids" if family == "gemma3" else "mm_token_type_ids"
        marked = batch[key] > 0
        assert int(marked.sum()) > 0
        assert all(t in media.token_ids for t in batch["input_ids"][marked].tolist())  # and never trained
    model = (model_class_for(AutoConfig.from_pretrained(path)) or AutoModelForCausalLM).from_pretrained(path)
    with torch.no_grad():
        loss = model(**batch).loss  # the model checks media features against media tokens
    assert torch.isfinite(loss)


def test_qwen2_vl_video_as_frames_with_an_image(tiny_vlm_factory, reference_dir):
    """A video given as a list of frame files (different sizes: frames are made one size) next to an image."""
    import json

    path = tiny_vlm_factory("qwen2_vl")  # skipped where torchvision is missing
    tokenizer = AutoTokenizer.from_pretrained(path)
    media = MediaEncoder(load_processor(path), MediaSettings(video_max_pixels=64 * 64))
    d = reference_dir / "lf" / "data" / "mllm_demo_data"
    record = {"messages": [{"role": "user", "content": "<video><image>What happens?"},
                           {"role": "assistant", "content": "A thing."}],
              "tools": None, "chosen": None, "rejected": None, "kto_tag": None, "audios": None,
              "images": [str(d / "1.jpg")], "videos": [json.dumps([str(d / f"{i}.jpg") for i in (1, 2, 3)])],
              "_source": {"file": "f", "row": 0}}
    out = process_batch({k: [v] for k, v in record.items()}, stage="sft", tokenizer=tokenizer,
                        template=get_template("auto", tokenizer), settings=ProcessSettings(cutoff_len=8192), media=media)
    assert out["_status"] == [OK], out["_error"]
    row = {k: v[0] for k, v in out.items() if not k.startswith("_")}
    trained = [t for t, lab in zip(row["input_ids"], row["labels"]) if lab != IGNORE_INDEX]
    assert tokenizer.decode(trained) == "A thing.<|im_end|>"
    batch = MediaCollator(PaddedCollator(tokenizer.pad_token_id or 0), media)([row])
    assert batch["video_grid_thw"].tolist()[0][0] == 2  # 4 frames (3 + 1 repeated) in temporal patches of 2
    model = model_class_for(AutoConfig.from_pretrained(path)).from_pretrained(path)
    with torch.no_grad():
        assert torch.isfinite(model(**batch).loss)
