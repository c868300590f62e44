"""Chat templates: the tokenizer's own Jinja template (``auto``) and builtins by family name."""
