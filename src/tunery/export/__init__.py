"""`tunery export`: merge adapters, shard, quantize, or write GGUF + an Ollama Modelfile."""
