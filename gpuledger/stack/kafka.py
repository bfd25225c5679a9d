"""The local Kafka: Apache Kafka in KRaft mode, jars resolved from Maven Central by the pom shipped in ``gpuledger/data/kafka/``."""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import uuid
from pathlib import Path

from gpuledger.data import KAFKA_POM
from gpuledger.settings import StackSettings
from gpuledger.stack.processes import Managed, StackError

POM = KAFKA_POM

SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={log_dir}
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
min.insync.replicas=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.retention.hours=168
"""

LOG4J2 = """\
Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        Pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.server.KafkaRaftServer
        level: INFO
"""


def managed(stack: StackSettings) -> Managed:
    return Managed("kafka", stack.data_dir / "kafka", stack.kafka_port)


def _require(tool: str, why: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise StackError(f"'{tool}' is not on PATH; {why}. On Debian: apt-get install openjdk-17-jre-headless maven")
    return path


def ensure_jars(stack: StackSettings) -> Path:
    """Resolve the broker's jars once per pom version (Maven's ~/.m2 cache keeps later runs offline)."""
    pom_digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:12]
    jars = stack.jars_dir / pom_digest
    if (jars / ".complete").exists():
        return jars
    mvn = _require("mvn", "Maven resolves the Kafka broker from Maven Central")
    jars.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies", f"-DoutputDirectory={jars}", "-DincludeScope=runtime"],
        capture_output=True, text=True,
    )
    if result.returncode != 0:
        raise StackError(f"Maven could not resolve Kafka's jars (exit {result.returncode}):\n{(result.stdout + result.stderr)[-3000:]}")
    (jars / ".complete").write_text(pom_digest)
    return jars


# Kafka's own CLI tools (kafka-tools jar): what their shell scripts run.
TOOLS = {
    "topics": "org.apache.kafka.tools.TopicCommand",
    "consumer-groups": "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
    "console-consumer": "org.apache.kafka.tools.consumer.ConsoleConsumer",
}


def tool_command(stack: StackSettings, tool: str, args: list[str], bootstrap_servers: str) -> list[str]:
    """The java command line of one of Kafka's CLI tools (``kafka-topics.sh`` etc.), against ``bootstrap_servers`` unless given."""
    if tool not in TOOLS:
        raise StackError(f"unknown Kafka tool {tool!r}; choose one of: {', '.join(TOOLS)}")
    java = _require("java", "Kafka's tools need Java 17 or newer")
    jars = ensure_jars(stack)
    target = [] if "--bootstrap-server" in args else ["--bootstrap-server", bootstrap_servers]
    return [java, "-Xmx256m", "-cp", f"{jars}/*", TOOLS[tool], *target, *args]


def _format_storage(java: str, jars: Path, workdir: Path) -> None:
    if (workdir / "data" / "meta.properties").exists():
        return
    result = subprocess.run(
        [java, "-cp", f"{jars}/*", "kafka.tools.StorageTool", "format", "-t", uuid.uuid4().hex[:22],
         "-c", str(workdir / "server.properties"), "--ignore-formatted"],
        capture_output=True, text=True,
    )
    if result.returncode != 0:
        raise StackError(f"formatting Kafka's storage failed:\n{(result.stdout + result.stderr)[-3000:]}")


def _broker_answers(port: int) -> bool:
    """A minimal ApiVersions round trip: the port is open *and* the broker speaks Kafka."""
    request = bytes.fromhex("00120000") + (1).to_bytes(4, "big") + (5).to_bytes(2, "big") + b"probe"
    with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
        sock.sendall(len(request).to_bytes(4, "big") + request)
        size = int.from_bytes(sock.recv(4), "big")
        return size > 0 and len(sock.recv(size)) > 0


def start(stack: StackSettings) -> None:
    """Start Kafka unless ours is already running; block until it answers ApiVersions."""
    broker = managed(stack)
    if broker.pid() is not None:
        return
    java = _require("java", "the Kafka broker needs Java 17 or newer")
    jars = ensure_jars(stack)
    broker.workdir.mkdir(parents=True, exist_ok=True)
    (broker.workdir / "server.properties").write_text(
        SERVER_PROPERTIES.format(port=stack.kafka_port, controller_port=stack.kafka_controller_port, log_dir=(broker.workdir / "data").resolve())
    )
    (broker.workdir / "log4j2.yaml").write_text(LOG4J2)
    _format_storage(java, jars, broker.workdir)
    proc = broker.start(
        [java, f"-Xmx{stack.kafka_heap}", f"-Xms{stack.kafka_heap}", "-XX:+UseG1GC",
         f"-Dlog4j2.configurationFile={broker.workdir / 'log4j2.yaml'}", "-cp", f"{jars}/*", "kafka.Kafka", "server.properties"],
        cwd=broker.workdir,
    )
    broker.wait_ready(proc, lambda: _broker_answers(stack.kafka_port), stack.start_timeout_seconds)
