"""An HTTP server in a subprocess on a free local port, as the server benchmark and the server tests run it."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

LOG_TAIL = 3000  # characters of the server's log an error message quotes


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``cmd`` started with its output in ``log``; ready once ``/health`` on ``port`` answers 200.

    Raises RuntimeError, quoting the log, if the server exits or is not healthy within ``ready_s``.
    """

    def __init__(
        self,
        name: str,
        cmd: list[str],
        port: int,
        log: Path,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        ready_s: float = 600.0,
        stop_s: float = 60.0,
    ) -> None:
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self.stop_s = stop_s
        with log.open("wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=out, env=env)
        self._wait_until_healthy(ready_s)

    def _wait_until_healthy(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} not healthy after {seconds:.0f} s:\n{self.log_tail()}")

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-LOG_TAIL:]

    def stop(self) -> int:
        """SIGTERM, then SIGKILL if the server has not exited within ``stop_s``; its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(self.stop_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
