"""The ASGI middleware loaded inside vLLM's own process (``vllm serve --middleware``)."""
