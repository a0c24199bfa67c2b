import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { withClient } from '../test/support/database.js'
import { queueEvents, sendFailures } from './delivery-load.js'
import { describeStatuses } from './http-load.js'
import { createOrganization, type Organization } from './organizations.js'
import type { ScenarioResult } from './report.js'
import { peakMb, sampleRss, type BenchServer } from './server.js'
import { percentiles } from './stats.js'

/** Scaled by BENCH_DURATION_SECONDS like delivery-drain: 20 000 events at the default 10 s, 4 000 in CI's 2 s. */
const EVENTS_PER_SECOND = 2000
const MIN_EVENTS = 2000
const CONSUMERS = 4
/** The lease's maximum `limit`: 4 × 100 in flight stays under the default max_in_flight (1 000). */
const LEASE_LIMIT = 100
/** A consumer stops after this many empty leases in a row once the backlog's count has been leased. */
const EMPTY_LEASES_TO_STOP = 2
/** Before the count is reached an empty lease means "not readable yet" (an older transaction still open): ask again soon. */
const EMPTY_LEASE_PAUSE_MS = 5
/** With no lease or ack making progress for this long the drain gives up; the row check then says what is missing. */
const STALL_MS = 30_000
const OVERLOADED_TRIES = 10

export const subscriptionDrainEvents = (durationSeconds: number) => Math.max(MIN_EVENTS, Math.round(EVENTS_PER_SECOND * durationSeconds))

/** The scenario's set-up, for the report's settings line. */
export function describeSubscriptionDrain (durationSeconds: number): string {
  return `subscription-drain: ${subscriptionDrainEvents(durationSeconds)} events queued through batches of 100, then ${CONSUMERS} consumers ` +
    `leasing ${LEASE_LIMIT} and acking each lease on one pull subscription started at the beginning`
}

interface LeaseAnswer {
  lease_id: string | null
  events: Array<{ event_id: string }>
}

interface AckAnswer {
  acknowledged: string[]
}

/** What the consumers did, all of them together. */
interface Drain {
  /** Every event id in every lease, repeats included (a repeat is a failure of the check). */
  leasedIds: string[]
  ackedIds: Set<string>
  /** From the first lease sent to the last ack that acknowledged something. */
  drainSeconds: number
  /** From the first lease sent to the last consumer's stop (its trailing empty leases included). */
  wallSeconds: number
  requests: number
  latenciesMs: number[]
  statuses: Map<number, number>
  /** Requests that got no answer at all. */
  errors: number
  stalled: boolean
}

/** A POST with the organization's key: the status and the parsed body (undefined unless 200), or an error counted. */
async function post<T> (baseUrl: string, organization: Organization, path: string, body: object, drain: Drain): Promise<T | undefined> {
  const started = performance.now()
  drain.requests++
  try {
    const response = await fetch(`${baseUrl}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': organization.key },
      body: JSON.stringify(body)
    })
    const text = await response.text()
    drain.latenciesMs.push(performance.now() - started)
    drain.statuses.set(response.status, (drain.statuses.get(response.status) ?? 0) + 1)
    return response.status === 200 ? JSON.parse(text) as T : undefined
  } catch {
    drain.errors++
    return undefined
  }
}

async function createSubscription (baseUrl: string, organization: Organization): Promise<string> {
  const create = () => fetch(`${baseUrl}/api/subscriptions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': organization.key },
    body: JSON.stringify({ kind: 'pull', name: 'bench', start: 'beginning' })
  })
  let response = await create()
  // Right after the backlog's batches the server may still shed load (503 overloaded): asked again, as createOrganization does.
  for (let tries = 1; response.status === 503 && tries < OVERLOADED_TRIES; tries++) {
    await response.body?.cancel()
    await sleep(1000 * Number(response.headers.get('retry-after') ?? 1))
    response = await create()
  }
  if (response.status !== 201) throw new Error(`POST /api/subscriptions answered ${response.status}: ${await response.text()}`)
  return (await response.json() as { id: string }).id
}

/** CONSUMERS loops of lease → ack until each has seen EMPTY_LEASES_TO_STOP empty leases in a row after `expected` were leased. */
async function drainSubscription (baseUrl: string, organization: Organization, subscriptionId: string, expected: number): Promise<Drain> {
  const drain: Drain = {
    leasedIds: [], ackedIds: new Set(), drainSeconds: 0, wallSeconds: 0, requests: 0, latenciesMs: [], statuses: new Map(), errors: 0, stalled: false
  }
  const path = `/api/subscriptions/${subscriptionId}`
  const started = performance.now()
  let lastProgress = started
  let lastAck = started
  const consumer = async () => {
    let emptyInARow = 0
    while (emptyInARow < EMPTY_LEASES_TO_STOP) {
      if (performance.now() - lastProgress > STALL_MS) {
        drain.stalled = true
        return
      }
      const lease = await post<LeaseAnswer>(baseUrl, organization, `${path}/lease`, { limit: LEASE_LIMIT }, drain)
      if (lease === undefined || lease.lease_id === null || lease.events.length === 0) {
        // Only empty leases after the whole backlog was handed out count towards stopping.
        if (lease !== undefined && drain.leasedIds.length >= expected) emptyInARow++
        else await sleep(EMPTY_LEASE_PAUSE_MS)
        continue
      }
      emptyInARow = 0
      lastProgress = performance.now()
      for (const event of lease.events) drain.leasedIds.push(event.event_id)
      const ack = await post<AckAnswer>(baseUrl, organization, `${path}/ack`, { lease_id: lease.lease_id }, drain)
      if (ack !== undefined && ack.acknowledged.length > 0) {
        for (const id of ack.acknowledged) drain.ackedIds.add(id)
        lastAck = lastProgress = performance.now()
      }
    }
  }
  await Promise.all(Array.from({ length: CONSUMERS }, consumer))
  drain.drainSeconds = (lastAck - started) / 1000
  drain.wallSeconds = (performance.now() - started) / 1000
  return drain
}

/** The subscription's pending counts after the drain: all zero when every ack was recorded. */
async function pendingCounts (baseUrl: string, organization: Organization, subscriptionId: string): Promise<{ in_flight: number, available: number, dead: number }> {
  const response = await fetch(`${baseUrl}/api/subscriptions/${subscriptionId}`, { headers: { 'x-api-key': organization.key } })
  if (response.status !== 200) throw new Error(`GET /api/subscriptions/{id} answered ${response.status}: ${await response.text()}`)
  return (await response.json() as { pending: { in_flight: number, available: number, dead: number } }).pending
}

async function countEvents (databaseUrl: string, organizationId: string): Promise<number> {
  return await withClient(databaseUrl, async (client) => {
    const { rows } = await client.query<{ n: number }>('SELECT count(*)::int AS n FROM events WHERE organization_id = $1', [organizationId])
    return rows[0]?.n ?? 0
  })
}

/**
 * Every event the API accepted leased exactly once (no repeat, none missing, nothing else) and acked, the
 * organization's rows exactly those events, and the subscription left with nothing pending.
 */
function checkDrain (accepted: string[], rows: number, drain: Drain, pending: { in_flight: number, available: number, dead: number }): { ok: boolean, summary: string } {
  const acceptedSet = new Set(accepted)
  const leased = new Set(drain.leasedIds)
  const repeats = drain.leasedIds.length - leased.size
  const missing = accepted.filter((id) => !leased.has(id)).length
  const unexpected = [...leased].filter((id) => !acceptedSet.has(id)).length
  const unacked = [...leased].filter((id) => !drain.ackedIds.has(id)).length
  const left = pending.in_flight + pending.available + pending.dead
  const ok = accepted.length > 0 && rows === accepted.length && repeats === 0 && missing === 0 && unexpected === 0 && unacked === 0 && left === 0
  const counted = `${rows} rows = ${accepted.length} accepted, ${drain.leasedIds.length} leased (${repeats} repeated, ${missing} missing, ` +
    `${unexpected} unknown), ${drain.ackedIds.size} acked, ${left} left pending${drain.stalled ? ', STALLED' : ''}`
  if (accepted.length === 0) return { ok: false, summary: `${counted}: NOTHING TO CHECK (no event accepted)` }
  return { ok, summary: `${counted}: ${ok ? 'OK' : 'MISMATCH'}` }
}

/** A backlog of `events` in a fresh organization, a subscription at its beginning, and the drain. */
async function backlogAndDrain (server: BenchServer, name: string, events: number) {
  const organization = await createOrganization(server.baseUrl, name)
  const sent = await queueEvents(server.baseUrl, organization, events)
  const subscriptionId = await createSubscription(server.baseUrl, organization)
  // Only the drain is sampled: the backlog's ingest is the other scenarios' business.
  const { result: drain, rssSamples } = await sampleRss(server, () => drainSubscription(server.baseUrl, organization, subscriptionId, sent.acceptedIds.length))
  return { organization, sent, subscriptionId, drain, rssSamples }
}

/**
 * subscription-drain: the backlog is queued first (not timed), then CONSUMERS consumers drain it through one
 * subscription. events/s = events leased and acked ÷ seconds from the first lease to the last ack;
 * requests/s and latency cover every lease and ack request.
 */
export async function measureSubscriptionDrain (server: BenchServer, databaseUrl: string, durationSeconds: number, warmUpSeconds: number): Promise<ScenarioResult> {
  const name = 'subscription-drain'
  // The lease and ack paths are cold in a server that only ingested so far.
  await backlogAndDrain(server, `bench-warm-up-${name}`, subscriptionDrainEvents(warmUpSeconds))
  const { organization, sent, subscriptionId, drain, rssSamples } = await backlogAndDrain(server, `bench-${name}`, subscriptionDrainEvents(durationSeconds))
  const check = checkDrain(sent.acceptedIds, await countEvents(databaseUrl, organization.id),
    drain, await pendingCounts(server.baseUrl, organization, subscriptionId))
  const non2xx = [...drain.statuses].reduce((sum, [status, count]) => status === 200 ? sum : sum + count, 0)
  // Leases and acks answer 200 only; a failed ingest request leaves the backlog short of its events.
  const failures = [
    ...sendFailures(sent),
    ...(non2xx > 0 ? [`${non2xx} non-200 answers to leases and acks (${describeStatuses(drain.statuses)})`] : []),
    ...(drain.errors > 0 ? [`${drain.errors} lease or ack requests failed without an answer`] : [])
  ]
  const latency = percentiles(drain.latenciesMs)
  const eventsPerSecond = drain.drainSeconds > 0 ? drain.ackedIds.size / drain.drainSeconds : 0
  console.log(`${name}: ${eventsPerSecond.toFixed(0)} events/s leased and acked (${drain.ackedIds.size} in ${drain.drainSeconds.toFixed(2)} s, ` +
    `${CONSUMERS} consumers), p99 ${latency.p99.toFixed(1)} ms; ${check.summary}${failures.map((failure) => `; FAILED: ${failure}`).join('')}`)
  return {
    name,
    requestsPerSecond: drain.wallSeconds > 0 ? drain.requests / drain.wallSeconds : 0,
    eventsPerSecond,
    p50: latency.p50,
    p99: latency.p99,
    max: latency.max,
    non2xx: non2xx + drain.errors,
    peakRssMb: peakMb(rssSamples),
    eventsPerInsert: undefined,
    rowCheck: check.summary,
    rowCheckOk: check.ok,
    failures
  }
}
