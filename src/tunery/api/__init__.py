"""OpenAI-compatible HTTP API over an inference engine."""
