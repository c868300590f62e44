"""``tunery export``: merge, quantize or convert to GGUF; prints what was written."""

from __future__ import annotations

from tunery.cli import options


def main(tokens: list[str]) -> int:
    """``tunery export [config.yaml] [--key value ...]``."""
    cfg = options.load("export", tokens, hint="tunery export [config.yaml] [--key value ...]")
    # the export imports torch, transformers and peft (seconds); --help must not pay for them
    from tunery.export.workflow import run_export

    result = run_export(cfg)
    print(f"exported to {result.export_dir}")
    for path in (result.gguf_file, result.modelfile):
        if path is not None:
            print(f"  {path.name}")
    if result.modelfile is not None:
        print(f"  run it with: cd {result.export_dir} && ollama create {result.export_dir.name} -f Modelfile")
    return 0
