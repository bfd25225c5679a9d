"""The local Kafka: Apache Kafka in KRaft mode, jars resolved from Maven Central by the pom shipped in ``gpuledger/data/kafka/``.

One node by default; ``stack.kafka_brokers`` > 1 starts a cluster of combined broker+controller
nodes (a KRaft quorum of all of them) with replication factor min(3, nodes) and
``min.insync.replicas`` one less (2 on 3 nodes) for every topic, internal ones included.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import uuid
from functools import partial
from pathlib import Path

from gpuledger.data import KAFKA_POM
from gpuledger.settings import StackSettings
from gpuledger.stack.processes import Managed, StackError

POM = KAFKA_POM

SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id={node_id}
controller.quorum.voters={voters}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={log_dir}
num.partitions=1
offsets.topic.replication.factor={replicas}
offsets.topic.num.partitions=8
transaction.state.log.replication.factor={replicas}
transaction.state.log.min.isr={min_isr}
share.coordinator.state.topic.replication.factor={replicas}
share.coordinator.state.topic.min.isr={min_isr}
default.replication.factor={replicas}
min.insync.replicas={min_isr}
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


def ports(stack: StackSettings, node: int) -> tuple[int, int]:
    """(client port, controller port) of node ``node`` (0-based): the configured ports, plus 10 per node."""
    return stack.kafka_ports(node)


def managed(stack: StackSettings, node: int = 0) -> Managed:
    name = "kafka" if node == 0 else f"kafka-{node + 1}"
    return Managed(name, stack.data_dir / name, ports(stack, node)[0])


def nodes(stack: StackSettings) -> list[Managed]:
    return [managed(stack, node) for node in range(stack.kafka_brokers)]


def bootstrap_servers(stack: StackSettings) -> str:
    return ",".join(f"127.0.0.1:{ports(stack, node)[0]}" for node in range(stack.kafka_brokers))


def replication(stack: StackSettings) -> tuple[int, int]:
    """(replication factor, min.insync.replicas) of the stack's topics: one broker may fail without refusing writes."""
    replicas = min(3, stack.kafka_brokers)
    return replicas, max(1, replicas - 1)


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
        capture_output=True,
        text=True,
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


def _cluster_id(stack: StackSettings) -> str:
    """One id for every node of the stack's cluster, chosen at its first start."""
    path = stack.data_dir / "kafka-cluster-id"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(uuid.uuid4().hex[:22])
    return path.read_text().strip()


def _format_storage(java: str, jars: Path, workdir: Path, cluster_id: str) -> None:
    if (workdir / "data" / "meta.properties").exists():
        return
    result = subprocess.run(
        [
            java,
            "-cp",
            f"{jars}/*",
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(workdir / "server.properties"),
            "--ignore-formatted",
        ],
        capture_output=True,
        text=True,
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
    """Start every Kafka node of the stack not already running; block until each answers ApiVersions.

    All nodes are launched before any is waited for: a KRaft quorum elects no leader until most of its voters run.
    """
    java = _require("java", "the Kafka broker needs Java 17 or newer")
    jars = ensure_jars(stack)
    launched = [(node, start_node(stack, node, java, jars)) for node in range(stack.kafka_brokers) if managed(stack, node).pid() is None]
    for node, proc in launched:
        managed(stack, node).wait_ready(proc, partial(_broker_answers, ports(stack, node)[0]), stack.start_timeout_seconds)


def start_node(stack: StackSettings, node: int, java: str, jars: Path) -> subprocess.Popen[bytes]:
    """Write node ``node``'s configuration, format its storage once and launch it (without waiting)."""
    broker = managed(stack, node)
    broker.workdir.mkdir(parents=True, exist_ok=True)
    port, controller_port = ports(stack, node)
    replicas, min_isr = replication(stack)
    voters = ",".join(f"{n + 1}@127.0.0.1:{ports(stack, n)[1]}" for n in range(stack.kafka_brokers))
    (broker.workdir / "server.properties").write_text(
        SERVER_PROPERTIES.format(
            node_id=node + 1,
            voters=voters,
            port=port,
            controller_port=controller_port,
            replicas=replicas,
            min_isr=min_isr,
            log_dir=(broker.workdir / "data").resolve(),
        )
    )
    (broker.workdir / "log4j2.yaml").write_text(LOG4J2)
    _format_storage(java, jars, broker.workdir, _cluster_id(stack))
    return broker.start(
        [
            java,
            f"-Xmx{stack.kafka_heap}",
            f"-Xms{stack.kafka_heap}",
            "-XX:+UseG1GC",
            f"-Dlog4j2.configurationFile={broker.workdir / 'log4j2.yaml'}",
            "-cp",
            f"{jars}/*",
            "kafka.Kafka",
            "server.properties",
        ],
        cwd=broker.workdir,
    )
