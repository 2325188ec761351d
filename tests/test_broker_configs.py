"""Dynamic broker configs through real admin clients: DescribeConfigs and
IncrementalAlterConfigs / AlterConfigs on BROKER resources ("" is the cluster default,
"<node id>" one broker), stored in the metadata store and applied without a restart.

confluent-kafka and kafka-python both refuse a BROKER resource named "" on the client side
(the Java admin client sends it), so the cluster default is sent with kafka-python's
protocol classes over a socket; a broker's own configs go through both admin clients."""

import time

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import (AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource, NewTopic,
                                   ResourceType)
from kafka.admin import ConfigResource as KpConfigResource
from kafka.admin import ConfigResourceType, KafkaAdminClient
from kafka.protocol.admin import (DescribeConfigsRequest, DescribeConfigsResponse, IncrementalAlterConfigsRequest,
                                  IncrementalAlterConfigsResponse)

from clients import Rec, confluent_admin, confluent_produce, create_topic, watermarks
from servers import wait_until
from wire import connect, recv_frame

SEGMENT = 16384
# The machine's disk is shared: produce must not depend on how full it is.
ENV = {"STRATA_NODE_ID": "1", "STRATA_LOG_HOUSEKEEPING_INTERVAL_MS": "200",
       "STRATA_DISK_HIGH_WATERMARK_PERCENT": "100"}


def wire_call(bootstrap: str, request, response_class):
    sock = connect(bootstrap, timeout=30)
    try:
        request.with_header(correlation_id=1, client_id="strata-tests")
        sock.sendall(request.encode(header=True, framed=True))
        return response_class.decode(recv_frame(sock), version=request.version, header=True)
    finally:
        sock.close()


def alter_cluster_default(bootstrap: str, configs: dict[str, str | None]) -> tuple[int, str | None]:
    """IncrementalAlterConfigs v1 of the BROKER resource "": SET each value, DELETE each
    None; returns (error code, message)."""
    resource = IncrementalAlterConfigsRequest.AlterConfigsResource
    ops = [resource.AlterableConfig(name=k, config_operation=0 if v is not None else 1, value=v)
           for k, v in configs.items()]
    request = IncrementalAlterConfigsRequest(version=1, validate_only=False, resources=[
        resource(resource_type=ResourceType.BROKER.value, resource_name="", configs=ops)])
    r = wire_call(bootstrap, request, IncrementalAlterConfigsResponse).responses[0]
    return r.error_code, r.error_message


def describe_cluster_default(bootstrap: str) -> dict[str, tuple[str, int]]:
    """DescribeConfigs v4 of the BROKER resource "": {name: (value, source)}."""
    request = DescribeConfigsRequest(version=4, include_synonyms=True, include_documentation=False, resources=[
        DescribeConfigsRequest.DescribeConfigsResource(resource_type=ResourceType.BROKER.value, resource_name="",
                                                       configuration_keys=None)])
    result = wire_call(bootstrap, request, DescribeConfigsResponse).results[0]
    assert result.error_code == 0, result
    return {c.name: (c.value, c.config_source) for c in result.configs}


def set_broker_configs(bootstrap: str, name: str, configs: dict[str, str | None]) -> None:
    """IncrementalAlterConfigs through confluent-kafka: SET each value, DELETE each None."""
    entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) if v is not None
               else ConfigEntry(k, None, incremental_operation=AlterConfigOpType.DELETE)
               for k, v in configs.items()]
    resource = ConfigResource(ResourceType.BROKER, name, incremental_configs=entries)
    admin = confluent_admin(bootstrap)  # kept alive until the result is in
    admin.incremental_alter_configs([resource])[resource].result(timeout=30)


def describe_broker(bootstrap: str, name: str) -> dict:
    resource = ConfigResource(ResourceType.BROKER, name)
    admin = confluent_admin(bootstrap)  # kept alive until the result is in
    return admin.describe_configs([resource])[resource].result(timeout=30)


def value_and_source(bootstrap: str, name: str, config: str):
    entry = describe_broker(bootstrap, name).get(config)
    return None if entry is None else (entry.value, entry.source)


def old_records(count: int, age_ms: int) -> list[Rec]:
    base = int(time.time() * 1000) - age_ms
    return [Rec(partition=0, key=b"k%d" % i, value=(b"%d:" % i).ljust(200, b"#"), timestamp=base + i)
            for i in range(count)]


def test_cluster_default_retention_deletes_old_segments_and_survives_a_restart(broker, metadata):
    b = broker(metadata=metadata, env=ENV)
    # Two hours old: kept by the static default (7 days), not by a 1 h cluster default.
    produced = old_records(2000, 2 * 3600 * 1000)
    create_topic(b.bootstrap, "follows-default", 1, {"segment.bytes": str(SEGMENT)})
    create_topic(b.bootstrap, "own-retention", 1, {"segment.bytes": str(SEGMENT), "retention.ms": "-1"})
    for topic in ("follows-default", "own-retention"):
        confluent_produce(b.bootstrap, topic, produced, "none", **{"batch.num.messages": 10})
    assert watermarks(b.bootstrap, "follows-default") == (0, 2000)
    assert value_and_source(b.bootstrap, "1", "log.retention.ms") == (str(7 * 24 * 3600 * 1000),
                                                                      ConfigSource.DEFAULT_CONFIG.value)

    assert alter_cluster_default(b.bootstrap, {"log.retention.ms": "3600000", "num.partitions": "3"})[0] == 0
    wait_until("the cluster default retention to delete old segments",
               lambda: watermarks(b.bootstrap, "follows-default")[0] > 0, timeout=30, interval=0.2)
    assert watermarks(b.bootstrap, "own-retention") == (0, 2000), "a topic override beats the default"
    assert value_and_source(b.bootstrap, "1", "log.retention.ms") == (
        "3600000", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value)
    entry = describe_broker(b.bootstrap, "1")["broker.id"]
    assert entry.is_read_only and entry.value == "1"
    default = ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value
    assert describe_cluster_default(b.bootstrap) == {"log.retention.ms": ("3600000", default),
                                                     "num.partitions": ("3", default)}

    # New topics take the new num.partitions.
    admin = confluent_admin(b.bootstrap)
    admin.create_topics([NewTopic("wide", num_partitions=-1, replication_factor=-1)])["wide"].result(timeout=30)
    assert len(admin.list_topics("wide", timeout=10).topics["wide"].partitions) == 3

    b.restart()
    assert value_and_source(b.bootstrap, "1", "log.retention.ms") == (
        "3600000", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value)
    # This broker's own value beats the cluster default; kafka-python sees the same.
    set_broker_configs(b.bootstrap, "1", {"log.retention.ms": "7200000"})
    kp = KafkaAdminClient(bootstrap_servers=b.bootstrap)
    try:
        described = kp.describe_configs([KpConfigResource(ConfigResourceType.BROKER, "1",
                                                           configs={"log.retention.ms": None})],
                                        include_synonyms=True, config_filter="all")
        entry = described["broker"]["1"]["log.retention.ms"]
        assert (entry["value"], entry["config_source"], entry["read_only"]) == (
            "7200000", "DYNAMIC_BROKER_CONFIG", False), entry
        assert [(s["value"], s["source"]) for s in entry["synonyms"]] == [
            ("7200000", "DYNAMIC_BROKER_CONFIG"), ("3600000", "DYNAMIC_DEFAULT_BROKER_CONFIG"),
            (str(7 * 24 * 3600 * 1000), "DEFAULT_CONFIG")], entry
        deleted = kp.alter_configs([KpConfigResource(ConfigResourceType.BROKER, "1",
                                                     configs={"log.retention.ms": ("DELETE", None)})])
        assert deleted == {"broker": {"1": "OK"}}, deleted
    finally:
        kp.close()
    assert value_and_source(b.bootstrap, "1", "log.retention.ms") == (
        "3600000", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value)


def test_refused_changes_name_the_setting(broker):
    b = broker(env=ENV)
    for configs, words in [
        ({"broker.id": "7"}, "broker.id"),
        ({"log.retention.ms": "soon"}, "log.retention.ms"),
        ({"no.such.config": "1"}, "no.such.config"),
    ]:
        with pytest.raises(KafkaException) as refused:
            set_broker_configs(b.bootstrap, "1", configs)
        error = refused.value.args[0]
        assert error.name() == "INVALID_REQUEST", error
        assert words in error.str(), error
        code, message = alter_cluster_default(b.bootstrap, configs)
        assert code == 42 and words in message, (code, message)
    assert describe_cluster_default(b.bootstrap) == {}
    assert value_and_source(b.bootstrap, "1", "log.retention.ms")[1] == ConfigSource.DEFAULT_CONFIG.value


def test_a_second_broker_applies_the_cluster_default(broker, etcd):
    url = etcd.url(f"t-{int(time.time() * 1000)}")
    one = broker(metadata=url, env={**ENV, "STRATA_METADATA_REFRESH_INTERVAL_MS": "200"}, name="one")
    two = broker(metadata=url, env={**ENV, "STRATA_NODE_ID": "2", "STRATA_METADATA_REFRESH_INTERVAL_MS": "200"},
                 name="two")
    assert alter_cluster_default(one.bootstrap, {"log.flush.interval.ms": "250"})[0] == 0
    wait_until("broker 2 to apply the cluster default",
               lambda: value_and_source(two.bootstrap, "2", "log.flush.interval.ms")
               == ("250", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value), timeout=20, interval=0.2)
    # A broker's own value is its own: broker 1 keeps the cluster default.
    set_broker_configs(two.bootstrap, "2", {"log.flush.interval.ms": "500"})
    assert value_and_source(two.bootstrap, "2", "log.flush.interval.ms") == (
        "500", ConfigSource.DYNAMIC_BROKER_CONFIG.value)
    keys = etcd.get_prefix(url.split("/", 3)[-1] + "/broker_configs/")
    assert len(keys) == 2, keys
    assert value_and_source(one.bootstrap, "1", "log.flush.interval.ms") == (
        "250", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value)
