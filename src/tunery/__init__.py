"""Tunery: from a dataset to a fine-tuned, evaluated, served LLM without writing code."""

__version__ = "0.1.0"
