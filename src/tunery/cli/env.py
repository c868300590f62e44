"""``tunery env``: what a bug report needs to know about this machine."""

from __future__ import annotations

import importlib.metadata
import os
import platform

from tunery import __version__

PACKAGES = ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "tokenizers",
            "bitsandbytes", "gguf", "vllm", "deepspeed", "gradio", "fastapi")


def collect() -> dict[str, str]:
    info = {
        "tunery": __version__,
        "python": platform.python_version(),
        "os": platform.platform(),
        "cpu": f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)",
    }
    for name in PACKAGES:
        try:
            info[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            if name in ("torch", "transformers", "peft", "trl", "datasets", "accelerate"):
                info[name] = "not installed"
    try:
        import torch

        if torch.cuda.is_available():
            names = {torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())}
            info["gpu"] = f"{torch.cuda.device_count()} x {', '.join(sorted(names))} (CUDA {torch.version.cuda})"
        else:
            info["gpu"] = "none (CPU only)"
    except ImportError:
        info["gpu"] = "unknown (torch missing)"
    return info


def main(_args: list[str]) -> int:
    info = collect()
    width = max(map(len, info))
    for key, value in info.items():
        print(f"- {key.ljust(width)} : {value}")
    return 0
