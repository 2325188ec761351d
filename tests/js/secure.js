// kafkajs over TLS and SASL for the security tests (tests/security.py drives it).
// Reads one JSON spec on stdin and prints one JSON line:
//   {"ok": true, ...}  or  {"ok": false, "error": {"name", "message", "type", "cause"}}
// Spec: brokers, clientId, ssl ({ca, cert, key} file paths, or null), sasl ({mechanism,
// username, password} or {mechanism: "oauthbearer", token}, or null), retries, and
//   action "cluster":   connect an admin client and describe the cluster -> {brokers}
//   action "roundtrip": create `topic`, produce `messages` ({key, value} strings, acks -1),
//                       read them back in consumer group `groupId` from the beginning
//                       -> {brokers, consumed: [values in offset order]}
const fs = require('fs')
const { Kafka, logLevel } = require('kafkajs')

function kafkaFor (spec) {
  let ssl = false
  if (spec.ssl) {
    ssl = { rejectUnauthorized: true }
    if (spec.ssl.ca) ssl.ca = [fs.readFileSync(spec.ssl.ca, 'utf8')]
    if (spec.ssl.cert) ssl.cert = fs.readFileSync(spec.ssl.cert, 'utf8')
    if (spec.ssl.key) ssl.key = fs.readFileSync(spec.ssl.key, 'utf8')
  }
  let sasl
  if (spec.sasl) {
    if (spec.sasl.mechanism === 'oauthbearer') {
      const token = spec.sasl.token
      sasl = { mechanism: 'oauthbearer', oauthBearerProvider: async () => ({ value: token }) }
    } else {
      sasl = { mechanism: spec.sasl.mechanism, username: spec.sasl.username, password: spec.sasl.password }
    }
  }
  return new Kafka({
    clientId: spec.clientId || 'strata-tests',
    brokers: spec.brokers,
    ssl,
    sasl,
    logLevel: logLevel.ERROR,
    connectionTimeout: 5000,
    authenticationTimeout: 10000,
    requestTimeout: 30000,
    retry: { retries: spec.retries === undefined ? 5 : spec.retries, initialRetryTime: 200, maxRetryTime: 2000 }
  })
}

async function cluster (kafka) {
  const admin = kafka.admin()
  await admin.connect()
  try {
    const described = await admin.describeCluster()
    return { brokers: described.brokers }
  } finally {
    await admin.disconnect()
  }
}

async function roundtrip (kafka, spec) {
  const admin = kafka.admin()
  await admin.connect()
  let brokers
  try {
    await admin.createTopics({ topics: [{ topic: spec.topic, numPartitions: 1 }], waitForLeaders: true })
    brokers = (await admin.describeCluster()).brokers
  } finally {
    await admin.disconnect()
  }
  const producer = kafka.producer({ allowAutoTopicCreation: false })
  await producer.connect()
  try {
    await producer.send({ topic: spec.topic, acks: -1, messages: spec.messages.map(m => ({ key: m.key, value: m.value, partition: 0 })) })
  } finally {
    await producer.disconnect()
  }
  const consumer = kafka.consumer({ groupId: spec.groupId, sessionTimeout: 10000, heartbeatInterval: 1000 })
  const consumed = []
  await consumer.connect()
  try {
    await consumer.subscribe({ topics: [spec.topic], fromBeginning: true })
    await new Promise((resolve, reject) => {
      consumer.on(consumer.events.CRASH, e => reject(e.payload.error))
      consumer.run({
        eachMessage: async ({ message }) => {
          consumed.push({ offset: Number(message.offset), value: message.value.toString() })
          if (consumed.length >= spec.messages.length) resolve()
        }
      }).catch(reject)
    })
  } finally {
    await consumer.disconnect()
  }
  consumed.sort((a, b) => a.offset - b.offset)
  return { brokers, consumed: consumed.map(m => m.value) }
}

async function main () {
  const spec = JSON.parse(fs.readFileSync(0, 'utf8'))
  const kafka = kafkaFor(spec)
  const timeout = new Promise((resolve, reject) =>
    setTimeout(() => reject(new Error(`timed out after ${spec.timeoutMs || 60000} ms`)), spec.timeoutMs || 60000).unref())
  const work = spec.action === 'cluster' ? cluster(kafka) : roundtrip(kafka, spec)
  return Promise.race([work, timeout])
}

main().then(
  out => { console.log(JSON.stringify({ ok: true, ...out })); process.exit(0) },
  e => {
    const cause = e.originalError || e.cause
    console.log(JSON.stringify({
      ok: false,
      error: { name: e.name, message: e.message, type: e.type, cause: cause ? `${cause.name}: ${cause.message}` : null }
    }))
    process.exit(1)
  }
)
