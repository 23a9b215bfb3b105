// OpenMeter's official JavaScript SDK (@openmeter/sdk) against the real `meterlake serve`.
// Usage: node sdk_test.mjs BASE_URL TENANT_KEY TENANT
// Run by tests/openmeter.sh, which installs the pinned SDK and starts the server.
// `openmeter.events.ingest` sends single events and batches (with a resend), then
// `openmeter.meters.query` must give back the tokens sent, counted once, per model.
import assert from 'node:assert/strict'
import { OpenMeter } from '@openmeter/sdk'

const [baseUrl, apiKey, subject] = process.argv.slice(2)
const om = new OpenMeter({ baseUrl, apiKey })

const now = Date.now()
const events = []
for (let i = 0; i < 200; i++) {
  events.push({
    id: `js-${i}`,
    source: 'js-sdk-test',
    type: 'prompt',
    subject,
    time: new Date(now - 3600_000 - i * 60_000),
    data: { usage: { tokens: i + 1 }, model: i % 2 ? 'gpt' : 'claude' },
  })
}
await om.events.ingest(events[0])
await om.events.ingest(events.slice(1, 100))
await om.events.ingest(events.slice(1, 100)) // a resend: counted once
await om.events.ingest(events.slice(100))
// Without id, source and time the SDK fills them in (a fresh id each time).
await om.events.ingest({ type: 'prompt', subject, data: { usage: { tokens: 1000 }, model: 'gpt' } })

// A bad event is refused with a problem+json naming its field.
await assert.rejects(
  om.events.ingest({ type: 'prompt', subject, specversion: '0.3', data: {} }),
  (e) => {
    assert.equal(e.status ?? e.response?.status, 400)
    return true
  },
)

const res = await om.meters.query('tokens', {
  from: new Date(now - 86400_000).toISOString(),
  to: new Date(now + 60_000).toISOString(),
  groupBy: ['model'],
})
const got = Object.fromEntries(res.data.map((r) => [r.groupBy.model, r.value]))
const want = { gpt: 1000, claude: 0 }
for (const e of events) want[e.data.model] += e.data.usage.tokens
assert.deepEqual(got, want)
for (const r of res.data) assert.equal(r.subject, subject)
console.log(`openmeter js sdk: ${events.length + 1} events ingested once; query equals the fold`)
