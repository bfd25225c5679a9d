"""Publishing through real Kafka: an outage mid-stream is bridged by the spool, exactly once and in order per GPU."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from collectors.agent import Agent
from collectors.attribution import ASSIGNED_IDLE_PID
from collectors.metrics import health
from collectors.publisher import Publisher, PublisherStats, encode_samples
from collectors.simnvml import DeviceState, NvmlDouble
from collectors.spool import Spool
from gpuledger.kafka import client_options, ensure_topics
from gpuledger.sections.collector import CollectorSettings
from gpuledger.settings import Settings, StackSettings
from gpuledger.stack import kafka
from schemas import GpuSample, codec_for
from tests.collectors.conftest import CID
from tests.collectors.kubelet_grpc import PodResourcesServer, container, pod
from tests.collectors.test_attribution import CGROUP_CASES, make_proc
from tests.conftest import BASE

GPUS = ["GPU-a", "GPU-b", "GPU-c"]
T0 = datetime(2027, 1, 1, tzinfo=UTC)


def interval(i: int) -> list[GpuSample]:
    start = T0 + timedelta(seconds=5 * i)
    return [
        GpuSample(
            sample_id=f"n1/{g}/{int(start.timestamp() * 1e6)}",
            node="n1",
            gpu_uuid=g,
            gpu_index=k,
            gpu_model="H100",
            interval_start=start,
            interval_end=start + timedelta(seconds=5),
            utilization_pct=float(i % 100),
            memory_used_bytes=i,
            memory_total_bytes=80,
            power_watts=100.0,
        )
        for k, g in enumerate(GPUS)
    ]


async def consume_all(settings: Settings, topic: str, expected: int, timeout: float = 30.0) -> list[GpuSample]:
    consumer = AIOKafkaConsumer(
        topic, **client_options(settings.kafka), auto_offset_reset="earliest", enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    out: list[GpuSample] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(out) < expected and asyncio.get_running_loop().time() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for messages in batches.values():
                for m in messages:
                    sample = codec_for(GpuSample).decode(m.value)
                    assert m.key == sample.gpu_uuid.encode()
                    out.append(sample)
        await asyncio.sleep(1.0)  # anything extra (a duplicate) would arrive now
        for messages in (await consumer.getmany(timeout_ms=500)).values():
            out += [codec_for(GpuSample).decode(m.value) for m in messages]
    finally:
        await consumer.stop()
    return out


def assert_exactly_once_in_order(received: list[GpuSample], intervals: int) -> None:
    ids = [s.sample_id for s in received]
    assert len(ids) == len(set(ids)), "duplicates delivered"
    assert sorted(ids) == sorted(s.sample_id for i in range(intervals) for s in interval(i))
    per_gpu: dict[str, list[datetime]] = defaultdict(list)
    for s in received:  # one GPU = one key = one partition: consumption order is production order
        per_gpu[s.gpu_uuid].append(s.interval_start)
    for starts in per_gpu.values():
        assert starts == sorted(starts), "out of order"


@pytest.fixture(scope="module")
def own_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[StackSettings, Settings]]:
    """A broker of our own (not the session's): the outage test stops and restarts it.

    Its ports follow the session's base, below the ephemeral range (32768-60999), where an
    outgoing connection of any test could already hold them ("Address already in use").
    """
    stack = StackSettings(data_dir=tmp_path_factory.mktemp("collector-kafka"), kafka_port=BASE + 192, kafka_controller_port=BASE + 193)
    kafka.managed(stack).stop()
    kafka.start(stack)
    settings = Settings(stack=stack).with_stack_endpoints()
    asyncio.run(ensure_topics(settings))
    try:
        yield stack, settings
    finally:
        kafka.managed(stack).stop()


async def test_kafka_outage_is_bridged_by_the_spool(own_kafka: tuple[StackSettings, Settings], tmp_path: Path) -> None:
    stack, settings = own_kafka
    broker = kafka.managed(stack)
    try:
        spool = Spool(tmp_path / "spool", max_bytes=10_000_000, segment_bytes=2048)
        publisher = Publisher(
            settings.kafka,
            settings.topics.gpu_samples,
            spool,
            request_timeout_ms=2500,
            send_timeout=3.0,
            retry_seconds=0.3,
            max_retry_seconds=1.0,
        )
        publisher.start()
        for i in range(10):
            publisher.publish(encode_samples(interval(i), PublisherStats()))
            await asyncio.sleep(0.03)
        assert await publisher.drain(20)
        assert publisher.stats.spooled == 0 and publisher.stats.published == 30

        await asyncio.to_thread(broker.stop)  # Kafka goes away mid-stream
        for i in range(10, 30):
            publisher.publish(encode_samples(interval(i), PublisherStats()))
            await asyncio.sleep(0.1)
        for _ in range(200):  # the in-flight batch must time out before Kafka is declared away
            if publisher.stats.spooled:
                break
            await asyncio.sleep(0.1)
        assert publisher.stats.spooled > 0 and not spool.empty()
        for i in range(30, 35):  # while the spool holds anything, new records queue behind it on disk
            publisher.publish(encode_samples(interval(i), PublisherStats()))
        assert len(spool.segments()) > 1  # several fsync'd segments to replay in order

        await asyncio.to_thread(kafka.start, stack)  # and comes back
        for i in range(35, 40):
            publisher.publish(encode_samples(interval(i), PublisherStats()))
            await asyncio.sleep(0.03)
        assert await publisher.drain(40), f"still pending: {publisher.pending()}"
        await publisher.close()
        assert spool.empty() and spool.dropped == 0
        assert publisher.stats.published == 120

        assert_exactly_once_in_order(await consume_all(settings, settings.topics.gpu_samples, 120), 40)
    finally:
        if broker.pid() is None:
            await asyncio.to_thread(kafka.start, stack)  # leave it running for the next test


async def test_agent_once_publishes_simulated_gpus(own_kafka: tuple[StackSettings, Settings], tmp_path: Path) -> None:
    """The whole agent, end to end: one interval of 3 simulated GPUs, onto its own topic."""
    base = own_kafka[1]
    settings = base.model_copy(update={"topics": base.topics.model_copy(update={"gpu_samples": "collector-e2e.samples"})})
    await ensure_topics(settings)
    cfg = CollectorSettings(
        source="simulated",
        simulated_gpus=3,
        interval_seconds=0.6,
        poll_seconds=0.2,
        node="e2e-node",
        spool_dir=tmp_path / "spool",
        metrics_port=0,
        proc_root=tmp_path / "proc",
    )
    agent = Agent(cfg, settings)
    assert await agent.run(once=True) == 1
    assert agent.publisher.stats.published == 3 and agent.spool.empty()
    healthy, detail = health(agent.sampler, agent.publisher, nvml_stale_after=5.0, kafka_fresh_seconds=60.0)
    assert healthy, detail
    received = await consume_all(settings, settings.topics.gpu_samples, 3, timeout=20)
    assert len(received) == 3
    assert {s.node for s in received} == {"e2e-node"} and len({s.gpu_uuid for s in received}) == 3
    for s in received:
        assert s.sample_id == f"e2e-node/{s.gpu_uuid}/{int(s.interval_start.timestamp() * 1_000_000)}"
        assert 0.5 <= (s.interval_end - s.interval_start).total_seconds() <= 1.5
        assert s.memory_total_bytes > 0 and s.power_watts > 0 and s.energy_joules > 0


async def test_spool_left_by_a_previous_run_is_replayed_before_new_samples(
    own_kafka: tuple[StackSettings, Settings], tmp_path: Path
) -> None:
    base = own_kafka[1]
    settings = base.model_copy(update={"topics": base.topics.model_copy(update={"gpu_samples": "collector-restart.samples"})})
    await ensure_topics(settings)
    left_over = Spool(tmp_path / "spool", max_bytes=10_000_000, segment_bytes=1024)
    for i in range(5):  # what a run that died while Kafka was away left on disk
        left_over.append(encode_samples(interval(i), PublisherStats()))
    spool = Spool(tmp_path / "spool", max_bytes=10_000_000, segment_bytes=1024)
    publisher = Publisher(settings.kafka, settings.topics.gpu_samples, spool, send_timeout=5.0)
    publisher.start()
    for i in range(5, 10):
        publisher.publish(encode_samples(interval(i), PublisherStats()))
    assert await publisher.drain(20)
    await publisher.close()
    assert publisher.stats.published == 30 and spool.empty()
    assert_exactly_once_in_order(await consume_all(settings, settings.topics.gpu_samples, 30), 10)


async def test_agent_attributes_processes_to_pods_end_to_end(
    own_kafka: tuple[StackSettings, Settings], kubelet: tuple[str, list[str]], pod_resources_server: PodResourcesServer, tmp_path: Path
) -> None:
    """NVML (fake) pid -> /proc cgroup (fixture tree) -> kubelet pod list (real HTTP) -> Kafka message; an idle GPU
    held by a pod (kubelet pod-resources over real gRPC on a unix socket) -> placeholder process with the pod's labels."""
    base = own_kafka[1]
    settings = base.model_copy(update={"topics": base.topics.model_copy(update={"gpu_samples": "collector-attr.samples"})})
    await ensure_topics(settings)
    make_proc(tmp_path / "proc", 31337, CGROUP_CASES["kubepods v1 cgroupfs burstable"][0], "torchrun", 0)
    pod_resources_server.lister.pods = [
        pod("ml", "trainer-0", container("main", ("nvidia.com/gpu", ["GPU-attr-0"]))),
        pod("research", "idle-reserver", container("c", ("nvidia.com/gpu", ["GPU-attr-idle"]))),
    ]
    nvml = NvmlDouble(
        [
            DeviceState(uuid="GPU-attr-0", util_gpu=90, power_mw=500_000, processes={31337: 30 * 2**30}),
            DeviceState(uuid="GPU-attr-idle", index=1),
        ]
    )
    cfg = CollectorSettings(
        interval_seconds=0.5,
        poll_seconds=0.1,
        node="attr-node",
        spool_dir=tmp_path / "spool",
        metrics_port=0,
        proc_root=tmp_path / "proc",
        pod_list_url=kubelet[0] + "/pods?fieldSelector=spec.nodeName={node}",
        service_account_dir=tmp_path / "no-sa",
        pod_resources_socket=pod_resources_server.socket_path,
    )
    agent = Agent(cfg, settings, nvml=nvml)
    assert await agent.run(once=True) == 1
    sample, idle = sorted(await consume_all(settings, settings.topics.gpu_samples, 2, timeout=20), key=lambda s: s.gpu_index)
    assert sample.utilization_pct == 90.0 and sample.power_watts == 500.0
    [proc] = sample.processes  # the holder already has a process there: no placeholder
    assert (proc.pid, proc.pod, proc.namespace, proc.container_id, proc.command, proc.user) == (
        31337,
        "trainer-0",
        "ml",
        CID,
        "torchrun",
        "root",
    )
    assert proc.labels == {"team": "vision", "project": "detector"} and proc.gpu_memory_bytes == 30 * 2**30
    [held] = idle.processes
    assert (held.pid, held.pod, held.namespace, held.labels) == (
        ASSIGNED_IDLE_PID,
        "idle-reserver",
        "research",
        {"team": "research", "project": "p9"},
    )
    assert kubelet[1] == ["/pods?fieldSelector=spec.nodeName=attr-node"]
    assert pod_resources_server.lister.calls == 1 and agent.attributor.pod_resources is not None
    assert agent.attributor.pod_resources.stats.errors == {}


async def test_a_stalled_agent_skips_unobserved_intervals_and_does_not_invent_energy(
    own_kafka: tuple[StackSettings, Settings], tmp_path: Path
) -> None:
    base = own_kafka[1]
    settings = base.model_copy(update={"topics": base.topics.model_copy(update={"gpu_samples": "collector-stall.samples"})})
    await ensure_topics(settings)
    offset = [0.0]

    def clock() -> float:
        return time.time() + offset[0]

    nvml = NvmlDouble([DeviceState(uuid="GPU-stall", power_mw=100_000)], clock=clock)

    class Stalling(Agent):
        async def _emit(self, end: float) -> None:
            await super()._emit(end)
            dev = nvml.devices[0]
            dev.energy_mj += 100_000  # 1 s of 100 W per emitted interval, measured over 1 s of wall time
            if self.intervals == 2:  # the process is frozen for 3 whole intervals, the counter keeps counting
                offset[0] += 3.0
                dev.energy_mj += 300_000

    cfg = CollectorSettings(
        interval_seconds=1.0, poll_seconds=0.5, node="stall-node", spool_dir=tmp_path / "spool", metrics_port=0, proc_root=tmp_path
    )
    agent = Stalling(cfg, settings, nvml=nvml, clock=clock)
    assert await agent.run(max_intervals=4) == 4
    assert agent.sampler.stats.intervals_missed == 3
    received = sorted(await consume_all(settings, settings.topics.gpu_samples, 4, timeout=20), key=lambda s: s.interval_start)
    starts = [s.interval_start for s in received]
    assert [(b - a).total_seconds() for a, b in zip(starts, starts[1:], strict=False)] == [1.0, 4.0, 1.0]  # a 3-interval hole, no fakes
    total = sum(s.energy_joules for s in received)
    assert total + agent.sampler.stats.unattributed_joules == pytest.approx(600.0, abs=1.0)  # counter moved 600 J after baseline
    assert received[2].energy_joules < 300.0  # the interval after the stall got only its own share
