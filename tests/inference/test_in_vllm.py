"""The middleware inside a real vLLM server. Needs the vllm extra, a GPU and a small model.

Skipped where vLLM is not installed (the test machines; see ``fake_vllm`` for the stand-in).
Set ``GPULEDGER_TEST_VLLM_MODEL`` (a local path or a cached Hugging Face id) to run it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gpuledger.settings import Settings
from inference.metering.events import key_id_for_secret
from tests.inference.usage_tap import UsageTap

pytest.importorskip("vllm")
ROOT = Path(__file__).resolve().parents[2]
MODEL = os.environ.get("GPULEDGER_TEST_VLLM_MODEL", "")


@pytest.fixture(scope="module")
def vllm_url(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not MODEL:
        pytest.skip("set GPULEDGER_TEST_VLLM_MODEL to a small model to run vLLM")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "GPULEDGER_KAFKA__BOOTSTRAP_SERVERS": stack_settings.kafka.bootstrap_servers,
        "GPULEDGER_TOPICS__INFERENCE_USAGE": stack_settings.topics.inference_usage,
        "NODE_NAME": "test-node",
        "PYTHONPATH": str(ROOT),
    }
    log = (tmp_path_factory.mktemp("vllm") / "vllm.log").open("wb")
    argv = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        MODEL,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-model-len",
        "1024",
        "--enable-prompt-tokens-details",
        "--middleware",
        "inference.vllm_meter.middleware.UsageMeteringMiddleware",
    ]
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            assert proc.poll() is None, f"vLLM exited; see {log.name}"
            assert time.monotonic() < deadline, "vLLM did not become healthy in 10 minutes"
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(2)
        yield url
    finally:
        proc.terminate()
        proc.wait(60)


async def test_real_vllm_usage_matches_its_responses(vllm_url: str, tap: UsageTap) -> None:
    secret = f"sk-vllm-{time.time_ns()}"
    async with httpx.AsyncClient(base_url=vllm_url, headers={"Authorization": f"Bearer {secret}"}, timeout=120) as client:
        served = (await client.get("/v1/models")).json()["data"][0]["id"]
        plain = await client.post("/v1/completions", json={"model": served, "prompt": "The capital of France is", "max_tokens": 8})
        streamed = await client.post("/v1/completions", json={"model": served, "prompt": "One two three", "max_tokens": 8, "stream": True})
    assert plain.status_code == 200 and streamed.status_code == 200
    assert '"choices":[]' not in streamed.text and streamed.text.endswith("data: [DONE]\n\n")
    events = sorted(await tap.events(lambda e: e.key_id == key_id_for_secret(secret), 2, timeout=30), key=lambda e: e.request_start)
    usage = plain.json()["usage"]
    assert (events[0].prompt_tokens, events[0].completion_tokens) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert events[1].completion_tokens > 0 and events[1].ttft_ms is not None and events[1].node == "test-node"
