"""The OpenAI-compatible gateway: virtual keys, routing, budgets, upstream calls (a deployable of its own)."""
