"""kafkajs (Node.js) produces and administers through the broker; the other clients read
back exactly what it wrote. kafkajs has no assign()-only consumer (its consumer always
joins a group), so reading with kafkajs waits for the group coordinator."""

import base64
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from clients import check_in_partition_order, confluent_consume, make_records

JS = Path(__file__).parent / "js"


def kafkajs_produce(bootstrap: str, topic: str, partitions: int, codec: str, records) -> dict:
    node = shutil.which("node")
    if node is None or not (JS / "node_modules" / "kafkajs").is_dir():
        pytest.fail("node or tests/js/node_modules/kafkajs missing: scripts/install-deps.sh installs them",
                    pytrace=False)
    lines = "".join(
        json.dumps({
            "partition": r.partition,
            "key": base64.b64encode(r.key).decode(),
            "value": base64.b64encode(r.value).decode(),
            "timestamp": r.timestamp,
            "headers": [[k, base64.b64encode(v).decode()] for k, v in r.headers],
        }) + "\n"
        for r in records
    )
    result = subprocess.run([node, str(JS / "produce.js"), bootstrap, topic, str(partitions), codec],
                            input=lines, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"kafkajs failed:\n{result.stderr[-3000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("codec", ["None", "GZIP"])
def test_kafkajs_produces_what_others_read(broker, codec):
    b = broker()
    partitions = 3
    records = make_records(7, 3000, partitions, null_keys=False, null_values=False, null_headers=False)
    topic = f"kafkajs-{codec.lower()}"
    out = kafkajs_produce(b.bootstrap, topic, partitions, codec, records)
    assert all(r["errorCode"] == 0 for r in out["results"]), out["results"]

    # kafkajs's own view of the offsets (ListOffsets through its admin client).
    per_partition = [sum(1 for r in records if r.partition == p) for p in range(partitions)]
    reported = {int(o["partition"]): (int(o["low"]), int(o["high"])) for o in out["offsets"]}
    assert reported == {p: (0, n) for p, n in enumerate(per_partition)}

    got = confluent_consume(b.bootstrap, topic, partitions)
    check_in_partition_order(records, got, f"kafkajs {codec} read by confluent-kafka")
