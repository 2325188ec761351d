"""Servers for the black-box tests: free loopback ports, the strata binary, `strata` and
etcd processes with their logs, HTTP and Prometheus metrics.

Nothing here knows Strata's internals: tests talk to a `strata` process through its Kafka
listener and its HTTP port, exactly as a user would.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Iterable

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

# Generous: the suite must not flake on a loaded 2-core machine.
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 60

ANSI = re.compile(r"\x1b\[[0-9;]*m")

# ---------------------------------------------------------------------------------------
# Ports, binaries, HTTP
# ---------------------------------------------------------------------------------------

_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on now and that this run has not handed out."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no free loopback port found")


def strata_binary() -> Path:
    """STRATA_BIN, else target/release/strata, else target/debug/strata; fails if none."""
    explicit = os.environ.get("STRATA_BIN")
    if explicit:
        path = Path(explicit)
        if not (path.is_file() and os.access(path, os.X_OK)):
            pytest.fail(f"STRATA_BIN={explicit} is not an executable file", pytrace=False)
        return path
    for profile in ("release", "debug"):
        path = REPO_ROOT / "target" / profile / "strata"
        if path.is_file() and os.access(path, os.X_OK):
            return path
    pytest.fail(
        f"no strata binary: set STRATA_BIN or build one (cd {REPO_ROOT} && cargo build --release); "
        f"looked for {REPO_ROOT}/target/release/strata and {REPO_ROOT}/target/debug/strata",
        pytrace=False,
    )
    raise AssertionError("unreachable")


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """(status, body) of a GET; HTTP error statuses are returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


def http_post(url: str, body: bytes, timeout: float = 5.0) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, method="POST", headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


def wait_until(what: str, check: Callable[[], object], timeout: float = 30.0, interval: float = 0.1):
    """Polls `check` until it returns something truthy; fails with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what} (last value: {last!r})")
        time.sleep(interval)


def _die_with_parent():
    """Run in the child before exec: if pytest dies hard, the server dies too."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def tail(path: Path, lines: int = 80) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        return f"(cannot read {path}: {e})"
    return "\n".join(ANSI.sub("", text).splitlines()[-lines:])


# ---------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------


class ServerProcess:
    """A child process with a log file, stopped by PID."""

    name = "server"

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"{self.name}.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    # subclasses provide
    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def is_ready(self) -> bool:
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 80) -> str:
        return tail(self.log_path, lines)

    def log_text(self) -> str:
        try:
            return ANSI.sub("", self.log_path.read_text(errors="replace"))
        except OSError:
            return ""

    def spawn(self) -> subprocess.Popen:
        assert not self.is_running(), f"{self.name} is already running (pid {self.pid})"
        self.starts += 1
        command = self.command()
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts}: {' '.join(command)} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                cwd=self.workdir,
                preexec_fn=_die_with_parent,
            )
        return self.proc

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while True:
            code = self.proc.poll()
            if code is not None:
                pytest.fail(
                    f"{self.name} exited with code {code} before it was ready "
                    f"(log {self.log_path}):\n{self.log_tail()}",
                    pytrace=False,
                )
            try:
                if self.is_ready():
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill9()
                pytest.fail(
                    f"{self.name} was not ready within {timeout}s (log {self.log_path}):\n{self.log_tail()}",
                    pytrace=False,
                )
            time.sleep(0.1)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, wait; SIGKILL and fail if it does not exit in time. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is not None:
            return self.proc.returncode
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        self.kill9()
        pytest.fail(f"{self.name} (pid {self.pid}) was still running {timeout}s after SIGTERM "
                    f"(killed with SIGKILL):\n{self.log_tail()}", pytrace=False)

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


class StrataBroker(ServerProcess):
    """One `strata serve` process with its own data dir and loopback ports.

    `restart()` stops with SIGTERM (asserting exit code 0) and starts again on the same
    data dir and ports; `kill9()` simulates a crash; `start()` after `kill9()` recovers.
    """

    name = "strata"

    def __init__(
        self,
        workdir: Path,
        metadata: str = "embedded",
        env: dict[str, str] | None = None,
        args: Iterable[str] = (),
        config_text: str | None = None,
    ):
        super().__init__(workdir)
        self.binary = strata_binary()
        self.data_dir = workdir / "data"
        self.metadata = metadata
        self.env = dict(env or {})
        self.args = list(args)
        self.config_path: Path | None = None
        if config_text is not None:
            self.config_path = workdir / "strata.toml"
            self.config_path.write_text(config_text)
        self.port = free_port()
        self.http_port = free_port()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def command(self) -> list[str]:
        command = [
            str(self.binary),
            "serve",
            "--listen", self.bootstrap,
            "--http", f"127.0.0.1:{self.http_port}",
            "--data-dir", str(self.data_dir),
            "--metadata", self.metadata,
        ]
        if self.config_path is not None:
            command += ["--config", str(self.config_path)]
        return command + self.args

    def environment(self) -> dict[str, str]:
        # Settings leaking in from the caller's shell would change what is tested.
        env = {k: v for k, v in os.environ.items() if not k.startswith("STRATA_")}
        env["NO_COLOR"] = "1"
        env.update(self.env)
        return env

    def is_ready(self) -> bool:
        return http_get(self.http_url + "/readyz", timeout=2)[0] == 200

    def start(self) -> "StrataBroker":
        first = self.starts == 0
        for attempt in range(3):
            self.spawn()
            try:
                self.wait_ready()
                return self
            except pytest.fail.Exception:
                # Another process may have taken a port between free_port() and bind; only
                # a first start may move to new ports (restarts must keep theirs).
                if first and attempt < 2 and "Address already in use" in self.log_tail(20):
                    self.port, self.http_port = free_port(), free_port()
                    continue
                raise
        return self

    def restart(self) -> "StrataBroker":
        code = self.stop()
        assert code == 0, f"strata exited with {code} after SIGTERM (log {self.log_path}):\n{self.log_tail()}"
        return self.start()

    def metrics(self) -> str:
        status, body = http_get(self.http_url + "/metrics")
        assert status == 200, f"/metrics answered {status}: {body[:500]}"
        return body

    def metric(self, name: str, **labels: str) -> float | None:
        return metric_value(self.metrics(), name, **labels)

    def rss_kib(self) -> int:
        return proc_status_kib(self.pid, "VmRSS")


class EtcdServer(ServerProcess):
    name = "etcd"

    def __init__(self, workdir: Path, binary: str):
        super().__init__(workdir)
        self.binary = binary
        self.client_port = free_port()
        self.peer_port = free_port()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def url(self, prefix: str) -> str:
        return f"etcd://{self.endpoint}/{prefix}"

    def command(self) -> list[str]:
        client = f"http://127.0.0.1:{self.client_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        return [
            self.binary,
            "--name", "default",
            "--data-dir", str(self.workdir / "data"),
            "--listen-client-urls", client,
            "--advertise-client-urls", client,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"default={peer}",
        ]

    def is_ready(self) -> bool:
        status, body = http_get(f"http://{self.endpoint}/health", timeout=2)
        return status == 200 and '"true"' in body

    def start(self) -> "EtcdServer":
        self.spawn()
        self.wait_ready()
        return self

    def get_prefix(self, prefix: str) -> dict[str, str]:
        """Keys and values under `prefix`, through etcd's JSON gateway."""
        import base64
        import json

        key = prefix.encode()
        range_end = key[:-1] + bytes([key[-1] + 1])
        body = json.dumps(
            {"key": base64.b64encode(key).decode(), "range_end": base64.b64encode(range_end).decode()}
        ).encode()
        status, text = http_post(f"http://{self.endpoint}/v3/kv/range", body)
        assert status == 200, f"etcd range answered {status}: {text}"
        kvs = json.loads(text).get("kvs", [])
        return {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", "")).decode() for kv in kvs}


def proc_status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


# ---------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def metric_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    out = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m or m.group(1) != name:
            continue
        labels = dict(_LABEL.findall(m.group(2) or ""))
        out.append((labels, float(m.group(3))))
    return out


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The sum of the samples of `name` whose labels include `labels`; None if none."""
    matches = [v for ls, v in metric_samples(text, name) if all(ls.get(k) == v2 for k, v2 in labels.items())]
    return sum(matches) if matches else None
