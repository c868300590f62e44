"""Example reward functions for stage grpo (trl's convention: one float per completion)."""


def concise(prompts, completions, **kwargs):
    """Prefer replies that end within 60 words."""
    return [1.0 if len(c.split()) <= 60 else -1.0 for c in completions]
