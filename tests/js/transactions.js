// Runs a kafkajs transactional producer through three transactions on TOPIC (created here,
// 2 partitions): the first and third committed, the second aborted. Each writes 20 records
// `kjs-<n>-<i>` (partition i % 2) and sends an offset for GROUP on TOPIC/0 in the same
// transaction (offsets OFFSETS[n]). Prints one JSON line: the send results per transaction.
// Usage: node transactions.js BOOTSTRAP TOPIC GROUP
const { Kafka, logLevel } = require('kafkajs')

const [bootstrap, topic, group] = process.argv.slice(2)
const kafka = new Kafka({
  clientId: 'strata-tests-txn',
  brokers: [bootstrap],
  logLevel: logLevel.ERROR,
  retry: { retries: 8, initialRetryTime: 200 }
})

const PLAN = [['commit', 8], ['abort', 9], ['commit', 12]]

async function main () {
  const admin = kafka.admin()
  await admin.connect()
  await admin.createTopics({ topics: [{ topic, numPartitions: 2 }], waitForLeaders: true })
  await admin.disconnect()
  const producer = kafka.producer({ transactionalId: 'kjs-tx', idempotent: true, maxInFlightRequests: 1 })
  await producer.connect()
  const results = []
  for (let n = 0; n < PLAN.length; n++) {
    const [end, offset] = PLAN[n]
    const txn = await producer.transaction()
    const messages = []
    for (let i = 0; i < 20; i++) messages.push({ value: `kjs-${n}-${i}`, partition: i % 2 })
    const sent = await txn.send({ topic, acks: -1, messages })
    await txn.sendOffsets({
      consumerGroupId: group,
      topics: [{ topic, partitions: [{ partition: 0, offset: String(offset) }] }]
    })
    if (end === 'commit') await txn.commit()
    else await txn.abort()
    results.push({ n, end, sent })
  }
  await producer.disconnect()
  console.log(JSON.stringify({ results }))
}

main().catch(e => { console.error(e); process.exit(1) })
