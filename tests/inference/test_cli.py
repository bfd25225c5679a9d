"""``python -m inference.gateway.cli`` (mounted as ``gpuledger gateway``) serves a YAML config and publishes to Kafka."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import yaml

from gpuledger.settings import Settings
from tests.inference.fake_vllm import FakeVllm
from tests.inference.servers import serve
from tests.inference.usage_tap import UsageTap

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_gateway_command_serves_a_yaml_config(stack_settings: Settings, tap: UsageTap, tmp_path: Path) -> None:
    secret, key_id = f"sk-cli-{uuid.uuid4().hex}", f"key-cli-{uuid.uuid4().hex[:8]}"
    with serve(FakeVllm().app()) as backend:
        config = tmp_path / "gateway.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "gateway": {
                        "backends": [
                            {"name": "local", "kind": "vllm", "base_url": f"{backend}/v1", "api_key_env": "CLI_TEST_UPSTREAM_KEY"}
                        ],
                        "models": [{"name": "llama", "targets": [{"backend": "local"}]}],
                        "keys": [{"id": key_id, "sha256": hashlib.sha256(secret.encode()).hexdigest(), "org": "acme"}],
                    }
                }
            )
        )
        port = free_port()
        env = {
            **os.environ,
            "GPULEDGER_KAFKA__BOOTSTRAP_SERVERS": stack_settings.kafka.bootstrap_servers,
            "GPULEDGER_TOPICS__INFERENCE_USAGE": stack_settings.topics.inference_usage,
            "CLI_TEST_UPSTREAM_KEY": "upstream-secret",
        }
        env.pop("GPULEDGER_CONFIG", None)
        proc = subprocess.Popen(
            [sys.executable, "-m", "inference.gateway.cli", "--config", str(config), "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 20
            while True:
                assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
                try:
                    if httpx.get(f"{url}/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    assert time.monotonic() < deadline, "gateway did not start"
                    time.sleep(0.1)
            async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {secret}"}) as client:
                response = await client.post("/v1/completions", json={"model": "llama", "prompt": "a b c", "max_tokens": 2})
            assert response.status_code == 200
            [event] = await tap.events(lambda e: e.key_id == key_id, 1)
            assert (event.prompt_tokens, event.completion_tokens, event.deployment) == (3, 2, "local")
        finally:
            proc.terminate()
            output = proc.communicate(timeout=15)[0].decode()
        assert "upstream-secret" not in output and secret not in output
