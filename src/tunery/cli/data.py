"""``tunery data check|preview|render``: look at data the way training will see it.

    tunery data check   [cfg.yaml] [--dataset a,b] [--dataset_dir D] [--model_name_or_path M] [--json]
    tunery data preview [cfg.yaml] --dataset a --model_name_or_path M [--num 3] [--json]
    tunery data render  --template NAME|auto --model_name_or_path M --messages FILE
                        [--tools FILE] [--add_generation_prompt]

check exits 0 when every row is valid, 1 when some rows are invalid or a dataset fails to load.
render prints exactly the rendered text (no newline added) and nothing else, so it can be diffed.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import Any

from tunery.cli import options
from tunery.errors import ConfigError, DataError

# tunery.data.checker imports the data pipeline (torch, datasets: seconds): imported in the handlers
# so `tunery data --help` does not pay for them.

# `tunery data --help` shows these forms first (then every setting the command reads).
USAGE = ("tunery data check   [config.yaml] [--dataset a,b] [--dataset_dir D] [--model_name_or_path M] "
         "[--stage S] [--cutoff_len N] [--json]\n"
         "       tunery data preview [config.yaml] --dataset a --model_name_or_path M [--num 3] [--json]\n"
         "       tunery data render  --template NAME|auto --model_name_or_path M --messages FILE [--tools FILE] "
         "[--add_generation_prompt]")

# Options of the data command itself (not settings): name -> takes a value
OWN_OPTIONS = {"json": False, "num": True, "messages": True, "tools": True, "add_generation_prompt": False}
SUBCOMMANDS = ("check", "preview", "render")


def main(argv: list[str]) -> int:
    """``tunery data SUBCOMMAND ...``; without a known subcommand prints the usage above (exit 2)."""
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
        print(__doc__.strip())
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    sub, tokens = argv[0], argv[1:]
    own, tokens = options.pop_flags(tokens, OWN_OPTIONS)
    cfg = options.load("data", tokens)
    _quiet_progress()
    return {"check": run_check, "preview": run_preview, "render": run_render}[sub](cfg, own)


def _quiet_progress() -> None:
    """Progress bars are noise in a report meant to be read (or parsed with --json)."""
    # datasets takes a second to import; the usage text must not pay for it
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()


def _tokenizer_and_template(cfg):
    if not cfg.model.model_name_or_path:
        return None, None
    # the tokenizer loader imports transformers (seconds); --help must not pay for it
    from tunery.data.template import get_template
    from tunery.model.loader import load_tokenizer

    tokenizer = load_tokenizer(cfg.model)
    return tokenizer, get_template(cfg.data.template, tokenizer, cfg.data)


def _media(cfg):
    """The model's processor when it is a vision/audio model and the named datasets have media columns
    (media rows are then counted and previewed with their media tokens, as training sees them)."""
    if not cfg.model.model_name_or_path:
        return None
    from tunery.train.media import media_encoder  # loads the processor (transformers): only when asked

    return media_encoder(cfg)


def run_check(cfg, own: dict[str, Any]) -> int:
    """Print each dataset's status, invalid rows and token lengths; 1 when a row or dataset is bad."""
    tokenizer, template = _tokenizer_and_template(cfg)
    from tunery.data.checker import check_datasets

    results = check_datasets(cfg, tokenizer, template, cfg.finetuning.stage, media=_media(cfg))
    bad = any(r.status in ("invalid_rows", "error") for r in results)
    if own.get("json"):
        print(json.dumps([asdict(r) for r in results], indent=2, ensure_ascii=False))
        return 1 if bad else 0
    for r in results:
        print(f"{r.name} ({r.source}): {r.status}" + (f" - {r.message}" if r.message else ""))
        if r.status in ("ok", "invalid_rows"):
            print(f"  rows: {r.total}, valid: {r.valid}, invalid: {r.invalid}")
        for p in r.problems:
            field = f" field '{p['field']}'" if p.get("field") else ""
            print(f"  - {p['file']} row {p['row']}{field}: {p['reason']}")
        if r.lengths and r.lengths["count"]:
            s = r.lengths
            print(f"  tokens: p50 {s['p50']}, p95 {s['p95']}, max {s['max']}; longer than cutoff_len="
                  f"{s['cutoff_len']}: {s['cut']} ({100 * s['share_cut']:.1f}%)")
    print("problems found" if bad else "all datasets valid")
    return 1 if bad else 0


def run_preview(cfg, own: dict[str, Any]) -> int:
    """Print the first ``--num`` examples as training renders them, trained tokens inside [[ ]]."""
    if not cfg.data.dataset:
        raise ConfigError("preview needs --dataset NAME")
    tokenizer, template = _tokenizer_and_template(cfg)
    if tokenizer is None:
        raise ConfigError("preview needs --model_name_or_path (its tokenizer renders the examples)")
    from tunery.data.checker import preview_dataset

    previews = preview_dataset(cfg, tokenizer, template, int(own.get("num", 3)), cfg.finetuning.stage,
                               media=_media(cfg))
    if own.get("json"):
        print(json.dumps(previews, indent=2, ensure_ascii=False))
        return 0
    for p in previews:
        status = p["status"]
        if p.get("error"):  # the reason `data check` gives, without the "file row N:" it repeats
            status = f"{status}: {p['error'].split(': ', 1)[-1]}"
        print(f"=== {p['source']['file']} row {p['source']['row']} ({p['part']}): {p['num_tokens']} tokens, "
              f"{p['num_trained']} trained, {status} ===")
        print(p["marked_text"])
    print(f"(trained tokens are inside {'[[ ]]'})")
    return 0


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read the messages: {exc}", file=path) from exc


def run_render(cfg, own: dict[str, Any]) -> int:
    """Write exactly the text the template renders for ``--messages FILE`` (no newline added)."""
    if "messages" not in own:
        raise ConfigError("render needs --messages FILE (a JSON list of role/content messages)")
    if not cfg.model.model_name_or_path:
        raise ConfigError("render needs --model_name_or_path (it supplies the tokenizer and its chat template)")
    path = own["messages"]
    payload = _read_json(path)
    tools = payload.get("tools") if isinstance(payload, dict) else None
    messages = payload.get("messages") if isinstance(payload, dict) else payload
    if own.get("tools"):
        with open(own["tools"], encoding="utf-8") as f:
            tools = json.load(f)
    _, template = _tokenizer_and_template(cfg)
    from tunery.data.checker import render_conversation

    text = render_conversation(template, messages, tools, add_generation_prompt=bool(own.get("add_generation_prompt")),
                               source=path)
    sys.stdout.write(text)
    sys.stdout.flush()
    return 0
