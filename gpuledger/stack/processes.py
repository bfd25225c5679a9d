"""Start, find and stop the stack's server processes by pid file, never by name."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


class StackError(RuntimeError):
    """A local-stack problem with a message that says what to do about it."""


@dataclass(frozen=True)
class Managed:
    """One server process of the stack: its pid file, log and a readiness probe."""

    name: str
    workdir: Path
    port: int

    @property
    def pid_file(self) -> Path:
        return self.workdir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def pid(self) -> int | None:
        """The pid we started, if that process is still alive and still ours."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        try:
            zombie = Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
            ours = Path(f"/proc/{pid}/cwd").resolve() == self.workdir.resolve()
        except OSError:
            return None
        # A recycled pid belongs to some other process: ours run with cwd = our workdir.
        return pid if ours and not zombie else None

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log written)"

    def start(self, argv: Sequence[str], *, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Launch detached (own session) so it outlives the CLI; record its pid."""
        if port_in_use(self.port):
            raise StackError(
                f"{self.name}: port 127.0.0.1:{self.port} is already taken by another process. "
                f"Stop that process or choose another port (see 'stack' settings in the README)."
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )
        self.pid_file.write_text(str(proc.pid))
        return proc

    def wait_ready(self, proc: subprocess.Popen[bytes], probe: Callable[[], bool], timeout: float) -> None:
        """Poll ``probe`` until it answers; fail with the log tail if the process dies or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StackError(f"{self.name} exited during start-up. Last lines of {self.log_file}:\n{self.log_tail()}")
            try:
                if probe():
                    return
            except Exception:  # not ready yet: connection refused, partial start
                pass
            time.sleep(0.2)
        raise StackError(f"{self.name} did not become ready within {timeout:.0f}s. Last lines of {self.log_file}:\n{self.log_tail()}")

    def stop(self, timeout: float = 20.0) -> bool:
        """SIGTERM, then SIGKILL after ``timeout``; True if something was running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.pid() is not None:
            time.sleep(0.1)
        if self.pid() is not None:
            os.killpg(pid, signal.SIGKILL)
            while self.pid() is not None:
                time.sleep(0.05)
        while port_in_use(self.port) and time.monotonic() < deadline + timeout:
            time.sleep(0.1)  # the kernel releases the listener a moment after the process is gone
        self.pid_file.unlink(missing_ok=True)
        return True


def port_in_use(port: int) -> bool:
    """True when something already listens on 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0
