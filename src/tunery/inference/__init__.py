"""Inference workflows: engines (HF, vLLM), chat, batch prediction and its metrics."""
