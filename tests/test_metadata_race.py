"""A metadata round whose read predates a topic this broker just created must not close
the topic as "deleted on another broker" (it did: a first consumer group's
__consumer_offsets was created, then closed and its files deleted a moment later)."""

from confluent_kafka import Producer

from clients import QUIET, create_topic


def test_topics_created_during_a_round_survive_it(broker):
    # Rounds every 20 ms, so creations keep landing between a round's read and its apply.
    b = broker(env={"STRATA_METADATA_REFRESH_INTERVAL_MS": "20"})
    producer = Producer({**QUIET, "bootstrap.servers": b.bootstrap, "acks": "all"})
    names = [f"race-{i}" for i in range(40)]
    for name in names:
        create_topic(b.bootstrap, name, 1)
        producer.produce(name, value=name.encode())
    assert producer.flush(60) == 0
    log = b.log_text()
    assert "closed a topic deleted on another broker" not in log, log[-3000:]
    for name in names:
        assert b.partition_dir(name, 0).exists(), f"{name} lost its log"
