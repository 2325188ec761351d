// Produces records given as JSON lines on stdin with kafkajs, then prints one JSON line:
// the per-partition offsets kafkajs's admin client reports and the send results.
// Usage: node produce.js BOOTSTRAP TOPIC PARTITIONS CODEC < records.jsonl
const { Kafka, logLevel, CompressionTypes, Partitioners } = require('kafkajs')

const [bootstrap, topic, partitions, codec] = process.argv.slice(2)
const kafka = new Kafka({ clientId: 'strata-tests', brokers: [bootstrap], logLevel: logLevel.ERROR })

async function main () {
  const lines = require('fs').readFileSync(0, 'utf8').split('\n').filter(Boolean)
  const messages = lines.map(line => {
    const r = JSON.parse(line)
    return {
      key: Buffer.from(r.key, 'base64'),
      value: Buffer.from(r.value, 'base64'),
      partition: r.partition,
      timestamp: String(r.timestamp),
      headers: Object.fromEntries(r.headers.map(([k, v]) => [k, Buffer.from(v, 'base64')]))
    }
  })
  const admin = kafka.admin()
  await admin.connect()
  await admin.createTopics({ topics: [{ topic, numPartitions: Number(partitions) }], waitForLeaders: true })
  const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner })
  await producer.connect()
  const results = []
  for (let i = 0; i < messages.length; i += 500) {
    results.push(...await producer.send({
      topic, acks: -1, compression: CompressionTypes[codec], messages: messages.slice(i, i + 500)
    }))
  }
  const offsets = await admin.fetchTopicOffsets(topic)
  await producer.disconnect()
  await admin.disconnect()
  console.log(JSON.stringify({ offsets, results }))
}

main().catch(e => { console.error(e); process.exit(1) })
