"""Start-up: configuration sources and their validation, refusing to start when the
metadata store is unreachable or the data directory is taken."""

import subprocess

from clients import QUIET
from servers import free_port, strata_binary, StrataBroker


def test_config_file_env_and_flags(broker, tmp_path):
    """Settings come from --config FILE, overridden by STRATA_* variables, overridden by flags."""
    from confluent_kafka.admin import AdminClient

    b = broker(config_text="num_partitions = 3\nauto_create_topics = true\nnode_id = 5\n",
               env={"STRATA_NODE_ID": "7"})
    admin = AdminClient({**QUIET, "bootstrap.servers": b.bootstrap})
    md = admin.list_topics(timeout=30)
    assert list(md.brokers) == [7], md.brokers
    # Auto-created through a producer's Metadata request: num_partitions from the file.
    from confluent_kafka import Producer

    p = Producer({**QUIET, "bootstrap.servers": b.bootstrap})
    p.produce("auto-created", value=b"x")
    assert p.flush(60) == 0
    md = admin.list_topics(topic="auto-created", timeout=30)
    assert len(md.topics["auto-created"].partitions) == 3


def test_invalid_configuration_exits_with_an_error_naming_the_setting(tmp_path):
    binary = strata_binary()
    base = [str(binary), "serve", "--listen", f"127.0.0.1:{free_port()}", "--http", f"127.0.0.1:{free_port()}",
            "--admin-listen", f"127.0.0.1:{free_port()}", "--data-dir", str(tmp_path / "data")]
    for env, setting in [
        ({"STRATA_NUM_PARTITIONS": "0"}, "num_partitions"),
        ({"STRATA_LOG_SEGMENT_BYTES": "lots"}, "STRATA_LOG_SEGMENT_BYTES"),
        ({"STRATA_MAX_REQUEST_BYTES": "10"}, "max_request_bytes"),
        ({"STRATA_OTLP_ENDPOINT": "grpc://collector:4317"}, "otlp_endpoint"),
        ({"STRATA_OTLP_SAMPLE_RATIO": "2"}, "otlp_sample_ratio"),
    ]:
        result = subprocess.run(base, env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, timeout=60)
        assert result.returncode == 2, (env, result)
        assert setting in result.stderr.decode(), (env, result.stderr)
    result = subprocess.run(base + ["--metadata", "zookeeper://x"], capture_output=True, timeout=60)
    assert result.returncode == 2 and b"metadata" in result.stderr, result


def test_unreachable_etcd_fails_start_up(tmp_path):
    """A broker pointed at an etcd that is not there must exit non-zero, not serve."""
    dead = free_port()
    b = StrataBroker(tmp_path / "b", metadata=f"etcd://127.0.0.1:{dead}/nothing")
    proc = b.spawn()
    try:
        code = proc.wait(timeout=90)
    finally:
        b.kill9()
    assert code != 0
    assert "etcd" in b.log_text(), b.log_tail()


def test_two_brokers_cannot_share_a_data_directory(broker):
    first = broker()
    second = StrataBroker(first.workdir / "second")
    second.data_dir = first.data_dir
    proc = second.spawn()
    try:
        code = proc.wait(timeout=90)
    finally:
        second.kill9()
    assert code != 0, "a second broker started on a data directory in use"
    assert "data directory" in second.log_text(), second.log_tail()
    assert first.is_running()
