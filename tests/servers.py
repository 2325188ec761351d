"""Servers for the black-box tests: free loopback ports, the strata binary, `strata` and
etcd processes with their logs, HTTP and Prometheus metrics.

Nothing here knows Strata's internals: tests talk to a `strata` process through its Kafka
listener and its HTTP port, exactly as a user would.
"""

from __future__ import annotations

import http.client
import http.server
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
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


# The ports free_port hands out (see there).
PORTS_FROM, PORTS_TO = 20000, 32000


def _worker_slot() -> tuple[int, int]:
    """(this pytest-xdist worker's index, the number of workers); (0, 1) without xdist."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    return index % max(count, 1), max(count, 1)


def free_port() -> int:
    """A loopback port nothing listens on now and that this run has not handed out.

    Taken below Linux's default ephemeral range (32768-60999), so a client's outgoing
    connection cannot hold it before the server binds it; with pytest-xdist each worker
    takes only the ports congruent to its index, so two workers never hand out one port."""
    index, count = _worker_slot()
    for _ in range(2000):
        port = random.randrange(PORTS_FROM + index, PORTS_TO, count)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free loopback port found")


def stop_brokers(brokers: Iterable["StrataBroker"]) -> list[str]:
    """Stops every running broker with SIGTERM, then SIGKILLs them all (a last resort);
    returns a failure report for each that did not shut down cleanly (exit code not 0),
    for the caller to fail with once everything is stopped."""
    brokers = list(brokers)
    failures = []
    for b in brokers:
        if not b.is_running():
            continue
        try:
            code = b.stop()
        except BaseException as e:  # pytest.fail raises a BaseException
            failures.append(str(e))
            continue
        if code != 0:
            failures.append(f"strata (log {b.log_path}) exited with {code} on SIGTERM at teardown:\n{b.log_tail()}")
    for b in brokers:
        b.kill9()
    return failures


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
    # A session of its own: a process stopped with SIGSTOP is not resumed by the kernel's
    # SIGCONT when the shell that started the caller exits (an orphaned process group).
    new_session = False

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
                start_new_session=self.new_session,
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
        # In a cluster `__consumer_offsets` waits for offsets_topic_replication_factor (3)
        # live brokers; a lone broker on etcd gets 1 unless the test says otherwise.
        if metadata.startswith("etcd://"):
            self.env.setdefault("STRATA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1")
        # Tests make small segments to be quick; the production floors (1 MiB, 60 s)
        # refuse them. A test of the floors passes its own values.
        self.env.setdefault("STRATA_LOG_SEGMENT_BYTES_MIN", "1")
        self.env.setdefault("STRATA_LOG_SEGMENT_MS_MIN", "1")
        self.args = list(args)
        self.config_path: Path | None = None
        if config_text is not None:
            self.config_path = workdir / "strata.toml"
            self.config_path.write_text(config_text)
        self.port = free_port()
        self.http_port = free_port()
        # Bound only with an etcd metadata store; never the fixed default port, so brokers
        # of parallel tests (and anything else on the machine) cannot collide.
        self.replication_port = free_port()
        self.admin_port = free_port()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def admin(self) -> str:
        """The admin API address (`strata status --admin ...`)."""
        return f"127.0.0.1:{self.admin_port}"

    def command(self) -> list[str]:
        command = [
            str(self.binary),
            "serve",
            "--listen", self.bootstrap,
            "--http", f"127.0.0.1:{self.http_port}",
            "--replication-listen", f"127.0.0.1:{self.replication_port}",
            "--admin-listen", self.admin,
            "--data-dir", str(self.data_dir),
            "--metadata", self.metadata,
        ]
        if self.config_path is not None:
            command += ["--config", str(self.config_path)]
        return command + self.args

    def environment(self) -> dict[str, str]:
        # Settings leaking in from the caller's shell would change what is tested (AWS_*
        # too: the object store client reads credentials, endpoint and region from them).
        env = {k: v for k, v in os.environ.items() if not k.startswith(("STRATA_", "AWS_"))}
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
                    self.replication_port = free_port()
                    self.admin_port = free_port()
                    continue
                raise
        return self

    def restart(self) -> "StrataBroker":
        code = self.stop()
        assert code == 0, f"strata exited with {code} after SIGTERM (log {self.log_path}):\n{self.log_tail()}"
        return self.start()

    def wipe_data_dir(self) -> None:
        """Deletes the data dir entirely (the broker must be stopped): the next `start()`
        is the same node, on the same ports, with an empty disk."""
        assert not self.is_running(), f"strata (pid {self.pid}) is still running; stop it before wiping its data dir"
        shutil.rmtree(self.data_dir, ignore_errors=False)
        assert not self.data_dir.exists()

    def partition_dir(self, topic: str, partition: int) -> Path:
        """`<data_dir>/logs/<topic>.<topic id>/<partition>`; fails unless exactly one
        directory of that topic exists."""
        logs = self.data_dir / "logs"
        dirs = [p for p in logs.iterdir() if p.is_dir() and p.name.rsplit(".", 1)[0] == topic[:200]] \
            if logs.is_dir() else []
        assert len(dirs) == 1, f"expected one log directory of topic {topic!r} under {logs}, found {dirs}"
        return dirs[0] / str(partition)

    def topic_id(self, topic: str) -> str:
        """The topic id as it appears in the topic's log directory name."""
        return self.partition_dir(topic, 0).parent.name.rsplit(".", 1)[1]

    def local_segments(self, topic: str, partition: int) -> list[int]:
        """Base offsets of the local segments (`<base:020>.log` files), ascending."""
        d = self.partition_dir(topic, partition)
        return sorted(int(p.name[:-4]) for p in d.iterdir() if re.fullmatch(r"\d{20}\.log", p.name))

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


def moto_server_binary() -> str:
    """moto_server next to this Python (pip install -r tests/requirements.txt puts it
    there), else on PATH; fails if absent."""
    beside = Path(sys.executable).parent / "moto_server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("moto_server")
    if found:
        return found
    pytest.fail(f"moto_server is not installed (not beside {sys.executable}, not on PATH): "
                "pip install -r tests/requirements.txt (moto[server])", pytrace=False)
    raise AssertionError("unreachable")


class MotoServer(ServerProcess):
    """moto's S3-compatible server (in memory) on a free loopback port."""

    name = "moto"

    def __init__(self, workdir: Path):
        super().__init__(workdir)
        self.binary = moto_server_binary()
        self.port = free_port()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [self.binary, "-H", "127.0.0.1", "-p", str(self.port)]

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(AWS_ACCESS_KEY_ID=S3_KEY, AWS_SECRET_ACCESS_KEY=S3_SECRET, AWS_DEFAULT_REGION=S3_REGION)
        return env

    def is_ready(self) -> bool:
        return http_get(self.endpoint + "/moto-api/", timeout=2)[0] == 200

    def start(self) -> "MotoServer":
        for attempt in range(3):
            self.spawn()
            try:
                self.wait_ready()
                return self
            except pytest.fail.Exception:
                if attempt < 2 and "Address already in use" in self.log_tail(20):
                    self.port = free_port()
                    continue
                raise
        return self


# ---------------------------------------------------------------------------------------
# S3 (moto) from the test's side: boto3, a client other than the broker's
# ---------------------------------------------------------------------------------------

S3_KEY = "testing"
S3_SECRET = "testing"
S3_REGION = "us-east-1"

# `[PREFIX/]<cluster id>/topics/<topic>.<topic id>/<partition>/<base offset:020>-<uuid>.segment`
# (the cluster id is 22 characters of URL-safe base64)
SEGMENT_KEY = re.compile(
    r"^(?:(?P<prefix>.+)/)?(?P<cluster>[A-Za-z0-9_-]{22})/topics/(?P<topic>[^/]+)\.(?P<topic_id>[^./]+)/(?P<partition>\d+)/"
    r"(?P<base>\d{20})-(?P<uuid>[0-9A-Za-z-]+)\.segment$"
)


def s3_client(endpoint: str):
    """A boto3 S3 client for moto: dummy credentials, us-east-1, path-style addressing,
    no proxies from the environment, few retries (a test waits by polling instead)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=S3_REGION,
        aws_access_key_id=S3_KEY,
        aws_secret_access_key=S3_SECRET,
        config=Config(s3={"addressing_style": "path"}, proxies={}, retries={"max_attempts": 2},
                      connect_timeout=10, read_timeout=60),
    )


class Bucket:
    """One test's bucket in the session's moto, with listing helpers (boto3)."""

    def __init__(self, moto: MotoServer, name: str):
        self.moto = moto
        self.name = name
        self.client = s3_client(moto.endpoint)

    @property
    def endpoint(self) -> str:
        return self.moto.endpoint

    def create(self) -> "Bucket":
        self.client.create_bucket(Bucket=self.name)
        return self

    def objects(self, prefix: str = "") -> dict[str, int]:
        """Key -> size of every object under `prefix`."""
        out = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix):
            for obj in page.get("Contents", []):
                out[obj["Key"]] = obj["Size"]
        return out

    def segment_objects(self, topic: str | None = None, partition: int | None = None,
                        prefix: str = "") -> dict[str, dict]:
        """The `.segment` objects (of `topic`/`partition` if given), parsed:
        key -> {topic, topic_id, partition, base, uuid, size}. Other keys are left out."""
        out = {}
        for key, size in self.objects(prefix).items():
            m = SEGMENT_KEY.match(key)
            if not m:
                continue
            if (m.group("prefix") or "") != prefix.rstrip("/"):
                continue
            info = {"cluster": m.group("cluster"), "topic": m.group("topic"), "topic_id": m.group("topic_id"),
                    "partition": int(m.group("partition")), "base": int(m.group("base")),
                    "uuid": m.group("uuid"), "size": size}
            if topic is not None and info["topic"] != topic:
                continue
            if partition is not None and info["partition"] != partition:
                continue
            out[key] = info
        return out

    def head_bytes(self, key: str, n: int = 8) -> bytes:
        return self.client.get_object(Bucket=self.name, Key=key, Range=f"bytes=0-{n - 1}")["Body"].read()

    def get(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()

    def delete_all(self) -> None:
        """Removes every object and the bucket (frees moto's memory); best effort."""
        try:
            keys = list(self.objects())
            for i in range(0, len(keys), 1000):
                self.client.delete_objects(Bucket=self.name,
                                           Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})
            self.client.delete_bucket(Bucket=self.name)
        except Exception:
            pass


def s3_env(endpoint: str, bucket: str, prefix: str | None = None, **settings) -> dict[str, str]:
    """The broker environment for tiered storage on `bucket` at `endpoint` (moto or a
    FaultProxy in front of it): object store, S3 client settings, credentials, and
    remote.storage.enable on by default. Extra keyword settings become STRATA_<NAME>
    (e.g. remote_upload_interval_ms=200); a value of None leaves a setting out."""
    env = {
        "STRATA_OBJECT_STORE": f"s3://{bucket}" + (f"/{prefix.strip('/')}" if prefix else ""),
        "STRATA_S3_ENDPOINT": endpoint,
        "STRATA_S3_REGION": S3_REGION,
        "STRATA_S3_PATH_STYLE": "true",
        "STRATA_S3_ALLOW_HTTP": "true",
        "STRATA_REMOTE_STORAGE_ENABLE": "true",
        "AWS_ACCESS_KEY_ID": S3_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
        # Loopback traffic must not go through a proxy configured in the shell.
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    for name, value in settings.items():
        if value is not None:
            env["STRATA_" + name.upper()] = str(value)
    return env


# ---------------------------------------------------------------------------------------
# A TCP proxy that can cut the broker off from the object store
# ---------------------------------------------------------------------------------------


class FaultProxy:
    """Forwards 127.0.0.1:<port> to `upstream` (host, port) with one thread per direction.

    `block()` closes every open connection and, until `unblock()`, closes each new one as
    soon as it is accepted (with a reset), so the broker's object store client sees the
    store as unreachable. `refused` counts connections turned away while blocked,
    `accepted` those forwarded.
    """

    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self.port = free_port()
        self.accepted = 0
        self.refused = 0
        self._blocked = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", self.port))
        self._listener.listen(128)
        self._listener.settimeout(0.2)
        self._thread = threading.Thread(target=self._accept_loop, name="fault-proxy", daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def blocked(self) -> bool:
        return self._blocked.is_set()

    def block(self) -> None:
        self._blocked.set()
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for s in conns:
            _reset(s)

    def unblock(self) -> None:
        self._blocked.clear()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=10)
        self._listener.close()
        self.block()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            if self._blocked.is_set():
                self.refused += 1
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                _reset(client)
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            with self._lock:
                if self._blocked.is_set():  # blocked while connecting
                    self.refused += 1
                    _reset(client)
                    _reset(upstream)
                    continue
                self.accepted += 1
                self._conns.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(262144)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        # One side finished or failed: the connection is over (HTTP does not half-close).
        with self._lock:
            self._conns.discard(src)
            self._conns.discard(dst)
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass


def _reset(s: socket.socket) -> None:
    """Closes `s` with an RST (SO_LINGER 0) rather than an orderly FIN."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass


# ---------------------------------------------------------------------------------------
# An HTTP proxy that records the S3 requests a broker makes
# ---------------------------------------------------------------------------------------


def s3_key(target: str, bucket: str) -> str | None:
    """The object key of a path-style request ("" for a bucket request); None for other
    buckets."""
    parts = urllib.parse.urlsplit(target).path.lstrip("/").split("/", 1)
    if urllib.parse.unquote(parts[0]) != bucket:
        return None
    return urllib.parse.unquote(parts[1]) if len(parts) > 1 else ""


def s3_operation(method: str, target: str, bucket: str, headers) -> str | None:
    """The S3 API operation of a path-style request; None for other buckets."""
    url = urllib.parse.urlsplit(target)
    parts = url.path.lstrip("/").split("/", 1)
    if urllib.parse.unquote(parts[0]) != bucket:
        return None
    key = parts[1] if len(parts) > 1 else ""
    query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
    copy = "x-amz-copy-source" in {k.lower() for k in headers.keys()}
    if not key:
        if method == "GET":
            if "uploads" in query:
                return "ListMultipartUploads"
            if query.get("list-type") == ["2"]:
                return "ListObjectsV2"
            extra = set(query) - {"prefix", "delimiter", "marker", "max-keys", "encoding-type"}
            return "ListObjects" if not extra else f"bucket GET ?{'&'.join(sorted(extra))}"
        if method == "POST" and "delete" in query:
            return "DeleteObjects"
        return f"bucket {method} ?{'&'.join(sorted(query))}"
    if method == "PUT":
        if "partNumber" in query and "uploadId" in query:
            return "UploadPartCopy" if copy else "UploadPart"
        if query:
            return f"object PUT ?{'&'.join(sorted(query))}"
        return "CopyObject" if copy else "PutObject"
    if method == "POST":
        if "uploads" in query:
            return "CreateMultipartUpload"
        if "uploadId" in query:
            return "CompleteMultipartUpload"
    if method == "GET":
        if "uploadId" in query:
            return "ListParts"
        if not query:
            return "GetObject"
    if method == "HEAD" and not query:
        return "HeadObject"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in query else ("DeleteObject" if not query else None)
    return f"object {method} ?{'&'.join(sorted(query))}"


class RecordingProxy:
    """An HTTP proxy in front of moto that records every request for one bucket: its S3
    operation in `operations`, (method, operation, key) in `requests`, and the body size of
    each successful GetObject in `get_bytes`. It can answer
    the first `fail_upload_parts` UploadPart requests with 403 AccessDenied (a permanent
    error: the broker must abort that multipart upload)."""

    def __init__(self, upstream_port: int, bucket: str, fail_upload_parts: int = 0):
        self.upstream_port = upstream_port
        self.bucket = bucket
        self.fail_upload_parts = fail_upload_parts
        self.operations: list[str] = []
        self.requests: list[tuple[str, str, str]] = []
        # (key, body bytes) of every successful GetObject answered to the broker.
        self.get_bytes: list[tuple[str, int]] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    out = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _forward(self):
                body = self._body()
                op = s3_operation(self.command, self.path, proxy.bucket, self.headers)
                if op is not None:
                    key = s3_key(self.path, proxy.bucket) or ""
                    with proxy.lock:
                        proxy.operations.append(op)
                        proxy.requests.append((self.command, op, key))
                        fail = op == "UploadPart" and proxy.fail_upload_parts > 0
                        if fail:
                            proxy.fail_upload_parts -= 1
                    if fail:
                        error = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
                                 b"<Message>injected by the test</Message></Error>")
                        self.send_response(403)
                        self.send_header("Content-Type", "application/xml")
                        self.send_header("Content-Length", str(len(error)))
                        self.end_headers()
                        self.wfile.write(error)
                        return
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("connection", "keep-alive", "transfer-encoding", "content-length")}
                headers["Content-Length"] = str(len(body))
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                finally:
                    conn.close()
                self.send_response(response.status, response.reason)
                for k, v in response.getheaders():
                    if k.lower() not in ("connection", "keep-alive", "transfer-encoding", "content-length", "server",
                                         "date"):
                        self.send_header(k, v)
                if self.command == "HEAD":
                    self.send_header("Content-Length", response.getheader("Content-Length", "0"))
                    self.end_headers()
                else:
                    if op == "GetObject" and 200 <= response.status < 300:
                        with proxy.lock:
                            proxy.get_bytes.append((s3_key(self.path, proxy.bucket) or "", len(data)))
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="s3-recorder", daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def seen(self) -> set[str]:
        with self.lock:
            return set(self.operations)

    def mark(self) -> int:
        """A position in `requests`, for `since`."""
        with self.lock:
            return len(self.requests)

    def since(self, mark: int) -> list[tuple[str, str, str]]:
        """The requests recorded after `mark`."""
        with self.lock:
            return self.requests[mark:]

    def keys(self, operations: set[str], prefix: str = "") -> list[str]:
        """The keys of the requests made with one of `operations` whose key contains
        `prefix` at the start or after a "/" (keys carry the store's prefix and cluster id)."""
        with self.lock:
            requests = list(self.requests)
        return [k for _, op, k in requests
                if op in operations and (k.startswith(prefix) or f"/{prefix}" in k)]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


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
