"""Instrumented inference: metering for vLLM and the OpenAI-compatible gateway."""
