"""Token expansion and label masks for a vision-language model (tiny LLaVA: 4 image tokens per image)."""

from __future__ import annotations

import pytest

from tests.fixtures import tiny_llava as llava_fixtures
from tests.fixtures.tiny_llava import IMAGE_TOKEN, TOKENS_PER_IMAGE
from tunery.data.collator import MediaCollator, PaddedCollator
from tunery.data.media import MediaEncoder, MediaSettings
from tunery.data.processors import (
    FAILED,
    IGNORE_INDEX,
    OK,
    REPLY_CUT,
    TRUNCATED,
    ProcessSettings,
    process_batch,
)
from tunery.data.template import get_template
from tunery.model.multimodal import load_processor

llava4 = llava_fixtures.llava4  # the shared fixture (tests/fixtures/tiny_llava.py)
mllm_dir = llava_fixtures.mllm_dir  # the shared fixture (tests/fixtures/tiny_llava.py)


@pytest.fixture(scope="module")
def parts(llava4):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(llava4)
    processor = load_processor(llava4)
    assert processor is not None
    return tokenizer, get_template("auto", tokenizer), MediaEncoder(processor, MediaSettings())


def _record(image: str, n_images: int = 1) -> dict:
    return {"messages": [{"role": "user", "content": IMAGE_TOKEN * n_images + "Who is it?"},
                         {"role": "assistant", "content": "A player."}],
            "tools": None, "chosen": None, "rejected": None, "kto_tag": None,
            "images": [image] * n_images, "videos": None, "audios": None, "_source": {"file": "f.json", "row": 7}}


def _batch(record: dict) -> dict:
    return {key: [value] for key, value in record.items()}


def test_each_image_becomes_the_processors_token_count_and_only_the_reply_is_trained(parts, mllm_dir):
    tokenizer, template, media = parts
    image = str(mllm_dir / "mllm_demo_data" / "1.jpg")
    out = process_batch(_batch(_record(image, 2)), stage="sft", tokenizer=tokenizer, template=template,
                        settings=ProcessSettings(cutoff_len=512), media=media)
    assert out["_status"] == [OK]
    ids, labels = out["input_ids"][0], out["labels"][0]
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    # exact expansion: the template's ids with each <image> repeated TOKENS_PER_IMAGE times
    plain = template.encode(tokenizer, _record(image, 2)["messages"]).input_ids
    expected = [t for token in plain for t in ([token] * TOKENS_PER_IMAGE if token == image_id else [token])]
    assert ids == expected and ids.count(image_id) == 2 * TOKENS_PER_IMAGE
    # the processor agrees on the expansion
    from PIL import Image

    proc = media.processor(text=[template.render_text(_record(image, 2)["messages"])],
                           images=[Image.open(image)] * 2, add_special_tokens=False)
    assert proc["input_ids"][0] == ids
    # exact mask: the reply and its end-of-turn token, nothing else
    reply = tokenizer("A player.<|im_end|>", add_special_tokens=False)["input_ids"]
    start = len(ids) - len(reply) - 1  # the chat template ends the turn with "\n" after <|im_end|>
    assert labels == [IGNORE_INDEX] * start + reply + [IGNORE_INDEX]
    assert out["images"] == [[image, image]]


def test_train_on_prompt_never_trains_media_tokens(parts, mllm_dir):
    tokenizer, template, media = parts
    image = str(mllm_dir / "mllm_demo_data" / "2.jpg")
    out = process_batch(_batch(_record(image)), stage="sft", tokenizer=tokenizer, template=template,
                        settings=ProcessSettings(cutoff_len=512, train_on_prompt=True), media=media)
    ids, labels = out["input_ids"][0], out["labels"][0]
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    assert labels == [IGNORE_INDEX if t == image_id else t for t in ids]


def test_cutoff_that_would_cut_media_tokens_drops_the_row_with_the_reason(parts, mllm_dir):
    tokenizer, template, media = parts
    image = str(mllm_dir / "mllm_demo_data" / "1.jpg")
    full = process_batch(_batch(_record(image, 3)), stage="sft", tokenizer=tokenizer, template=template,
                         settings=ProcessSettings(cutoff_len=512), media=media)["input_ids"][0]
    first_image = full.index(tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
    ok = process_batch(_batch(_record(image, 3)), stage="sft", tokenizer=tokenizer, template=template,
                       settings=ProcessSettings(cutoff_len=len(full) - first_image), media=media)
    assert ok["_status"] == [TRUNCATED] and ok["input_ids"][0] == full[first_image:]  # TRUNCATED: the system prompt went
    out = process_batch(_batch(_record(image, 3)), stage="sft", tokenizer=tokenizer, template=template,
                        settings=ProcessSettings(cutoff_len=len(full) - first_image - 1), media=media)
    assert out["_status"] == [REPLY_CUT] and out["input_ids"] == [[]]
    assert f"would cut into the example's {3 * TOKENS_PER_IMAGE} media tokens" in out["_error"][0]
    assert out["_error"][0].startswith("f.json row 7: ")


def test_text_only_model_refuses_media_rows(parts, mllm_dir):
    tokenizer, template, _ = parts
    out = process_batch(_batch(_record(str(mllm_dir / "mllm_demo_data" / "1.jpg"))), stage="sft",
                        tokenizer=tokenizer, template=template, settings=ProcessSettings(cutoff_len=512), media=None)
    assert out["_status"] == [FAILED] and "images would be silently left out" in out["_error"][0]


def test_pt_refuses_media_rows_until_supported(parts, mllm_dir):
    tokenizer, template, media = parts
    record = _record(str(mllm_dir / "mllm_demo_data" / "1.jpg"))
    out = process_batch(_batch(record), stage="pt", tokenizer=tokenizer, template=template,
                        settings=ProcessSettings(cutoff_len=512), media=media)
    assert out["_status"] == [FAILED] and "not supported by Tunery's pt stages yet" in out["_error"][0]


def test_kto_rows_hold_the_images_in_the_prompt_and_train_the_reply_only(parts, mllm_dir):
    tokenizer, template, media = parts
    image = str(mllm_dir / "mllm_demo_data" / "1.jpg")
    record = {**_record(image, 2), "kto_tag": False}
    out = process_batch(_batch(record), stage="kto", tokenizer=tokenizer, template=template,
                        settings=ProcessSettings(cutoff_len=512), media=media)
    assert out["_status"] == [OK] and out["label"] == [False] and out["images"] == [[image, image]]
    sft = process_batch(_batch(record), stage="sft", tokenizer=tokenizer, template=template,
                        settings=ProcessSettings(cutoff_len=512), media=media)
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    prompt, reply = out["prompt_ids"][0], out["completion_ids"][0]
    assert prompt.count(image_id) == 2 * TOKENS_PER_IMAGE and image_id not in reply
    assert prompt + reply == out["input_ids"][0] and out["input_ids"][0] == sft["input_ids"][0][:len(prompt + reply)]
    assert reply == tokenizer("A player.<|im_end|>", add_special_tokens=False)["input_ids"]
    assert out["labels"][0] == [IGNORE_INDEX] * len(prompt) + reply
    # a cutoff that would cut into the image tokens drops the row with the reason
    cut = process_batch(_batch(record), stage="kto", tokenizer=tokenizer, template=template,
                        settings=ProcessSettings(cutoff_len=len(reply) + 4), media=media)
    assert cut["_status"] == [REPLY_CUT] and "would cut into the example's" in cut["_error"][0]


def test_collator_adds_pixel_values_that_match_the_image_tokens(parts, llava4, mllm_dir):
    import torch
    from transformers import LlavaForConditionalGeneration

    tokenizer, template, media = parts
    records = [_record(str(mllm_dir / "mllm_demo_data" / "1.jpg"), 2), _record(str(mllm_dir / "mllm_demo_data" / "3.jpg"))]
    rows = []
    for record in records:
        out = process_batch(_batch(record), stage="sft", tokenizer=tokenizer, template=template,
                            settings=ProcessSettings(cutoff_len=512), media=media)
        rows.append({key: values[0] for key, values in out.items() if not key.startswith("_")})
    batch = MediaCollator(PaddedCollator(tokenizer.pad_token_id), media)(rows)
    assert batch["pixel_values"].shape == (3, 3, 28, 28)
    assert batch["input_ids"].shape[0] == 2 and "images" not in batch
    model = LlavaForConditionalGeneration.from_pretrained(llava4)
    with torch.no_grad():
        loss = model(**batch).loss  # the model checks image features == image tokens
    assert torch.isfinite(loss)


def test_data_check_and_preview_count_the_media_tokens_the_processor_expands(llava4, mllm_dir):
    """`tunery data check`/`preview` with a vision model: the token lengths of mllm_demo's rows are the
    lengths training sees (each image 4 tokens), not the text alone."""
    import contextlib
    import io
    import json

    from tunery.cli import data as cli_data
    from tunery.config import parse_config
    from tunery.data.checker import check_datasets
    from tunery.data.dataset_info import get_dataset_attrs
    from tunery.data.loader import load_dataset_records
    from tunery.model.loader import load_tokenizer
    from tunery.train.media import media_encoder

    cfg = parse_config("data", {"model_name_or_path": str(llava4), "dataset": "mllm_demo",
                                "dataset_dir": str(mllm_dir), "template": "auto", "cutoff_len": 512})
    tokenizer = load_tokenizer(cfg.model)
    template = get_template("auto", tokenizer)
    media = media_encoder(cfg)
    records, _ = load_dataset_records(get_dataset_attrs("mllm_demo", str(mllm_dir))[0], "sft")
    images = [len(r["images"] or []) for r in records]
    text_only = [len(template.encode(tokenizer, r["messages"]).input_ids) for r in records]
    expanded = [n + (TOKENS_PER_IMAGE - 1) * k for n, k in zip(text_only, images)]  # each <image> -> 4 tokens
    (check,) = check_datasets(cfg, tokenizer, template, "sft", media=media)
    assert check.status == "ok" and check.lengths["count"] == len(records)
    assert check.lengths["max"] == max(expanded) and check.lengths["max"] != max(text_only)

    for sub, extra in (("check", []), ("preview", ["--num", "2"])):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert cli_data.main([sub, "--model_name_or_path", str(llava4), "--dataset", "mllm_demo", "--dataset_dir",
                                  str(mllm_dir), "--template", "auto", "--json", *extra]) == 0
        report = json.loads(out.getvalue())
        if sub == "check":
            assert report[0]["lengths"]["max"] == max(expanded)
        else:
            assert [p["num_tokens"] for p in report] == expanded[:2]
            assert all(p["input_ids"].count(tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)) == TOKENS_PER_IMAGE * k
                       for p, k in zip(report, images))
