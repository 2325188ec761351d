"""Fixtures for the black-box tests: real `strata` processes, a real etcd, real clients.

- `broker`: a factory. `broker(env=..., args=..., metadata=..., config_text=...)` starts a
  strata process on free loopback ports with its own data dir and waits for /readyz.
  Every process it started is stopped by PID when the test ends.
- `etcd`: one etcd for the session on free loopback ports (tests use distinct prefixes).
- `metadata`: parametrized over "embedded" and "etcd"; the metadata URL a scenario test
  passes to `broker(metadata=...)`, so each scenario runs against both stores.
- `moto`: one moto S3 server for the session; `bucket`: a fresh, empty bucket in it for
  one test (a `servers.Bucket`: name, boto3 client, listing helpers), emptied and removed
  afterwards. `servers.s3_env(...)` builds the broker's environment for it.
- `fault_proxy`: a `servers.FaultProxy` in front of moto for one test (`block()` /
  `unblock()` cut the object store off), stopped at teardown.

A server that cannot start makes the test fail with its log, never skip. When a test
fails, the tail of each of its servers' logs is attached to the report.
"""

from __future__ import annotations

import shutil
import uuid

import pytest

from servers import Bucket, EtcdServer, FaultProxy, MotoServer, stop_brokers, strata_binary, StrataBroker


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for server in getattr(item, "_strata_servers", []):
            report.sections.append(
                (f"{server.name} log {server.log_path} (pid {server.pid})", server.log_tail(120))
            )


def _servers(request) -> list:
    node = request.node
    if not hasattr(node, "_strata_servers"):
        node._strata_servers = []
    return node._strata_servers


@pytest.fixture(scope="session")
def strata_bin():
    return strata_binary()


@pytest.fixture
def broker(request, tmp_path, strata_bin):
    """Factory: start a strata broker; stopped by PID at teardown."""
    started: list[StrataBroker] = []

    def start(env: dict[str, str] | None = None, args=(), metadata: str = "embedded",
              config_text: str | None = None, name: str | None = None) -> StrataBroker:
        workdir = tmp_path / (name or f"strata{len(started)}")
        b = StrataBroker(workdir, metadata=metadata, env=env, args=args, config_text=config_text)
        started.append(b)
        _servers(request).append(b)
        return b.start()

    yield start
    # A broker that does not shut down cleanly is a failure of the test using it; every
    # process is stopped (SIGKILL as a last resort) before that is reported.
    failures = stop_brokers(started)
    if failures:
        pytest.fail("\n\n".join(failures), pytrace=False)


@pytest.fixture(scope="session")
def etcd(tmp_path_factory):
    binary = shutil.which("etcd") or "/usr/bin/etcd"
    if not shutil.which(binary):
        pytest.fail("etcd is not installed (Debian package etcd-server provides /usr/bin/etcd)", pytrace=False)
    server = EtcdServer(tmp_path_factory.mktemp("etcd"), binary)
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["embedded", "etcd"])
def metadata(request):
    """The `--metadata` value for a scenario test: embedded, or a fresh etcd prefix."""
    if request.param == "embedded":
        return "embedded"
    server: EtcdServer = request.getfixturevalue("etcd")
    _servers(request).append(server)
    return server.url(f"t-{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="session")
def moto(tmp_path_factory):
    """moto's S3 server for the session (tests use distinct buckets)."""
    server = MotoServer(tmp_path_factory.mktemp("moto"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def bucket(request, moto) -> Bucket:
    """A new empty bucket for this test; its objects and the bucket go at teardown."""
    _servers(request).append(moto)
    if not moto.is_running():
        pytest.fail(f"moto_server is no longer running (log {moto.log_path}):\n{moto.log_tail()}", pytrace=False)
    b = Bucket(moto, f"strata-{uuid.uuid4().hex[:16]}")
    try:
        b.create()
    except Exception as e:
        pytest.fail(f"cannot create bucket {b.name} in moto at {moto.endpoint}: {e}\n{moto.log_tail()}", pytrace=False)
    yield b
    b.delete_all()


@pytest.fixture
def fault_proxy(moto):
    """A TCP proxy to moto that a test can block and unblock."""
    proxy = FaultProxy(("127.0.0.1", moto.port))
    yield proxy
    proxy.stop()
