import { performance } from 'node:perf_hooks'
import { queueEvents } from './delivery-load.js'
import { createOrganization, type Organization } from './organizations.js'
import type { ScenarioResult } from './report.js'
import { peakMb, sampleRss, type BenchServer } from './server.js'
import { percentiles } from './stats.js'
import {
  CONSUMERS, countDrain, countEvents, drainFailures, drainSubscription, LEASE_LIMIT, non200, required, scaledEvents, type Drain, type Pending
} from './subscription-consumers.js'

/** Scaled by BENCH_DURATION_SECONDS like delivery-drain: 20 000 events at the default 10 s, 4 000 in CI's 2 s. */
const EVENTS_PER_SECOND = 2000

export const subscriptionDrainEvents = (durationSeconds: number) => scaledEvents(EVENTS_PER_SECOND, durationSeconds)

/** The scenario's set-up, for the report's settings line. */
export function describeSubscriptionDrain (events: number): string {
  return `subscription-drain: ${events} events queued through batches of 100, then ${CONSUMERS} consumers ` +
    `leasing ${LEASE_LIMIT} and acking each lease on one pull subscription started at the beginning`
}

/** What the consumers did: the drain, every lease and ack answered timed, and its seconds. */
interface Timings {
  /** Every lease and ack that got an answer, the trailing empty leases included. */
  latenciesMs: number[]
  /** From the first lease sent to the last ack that acknowledged something. */
  drainSeconds: number
  /** From the first lease sent to the last consumer's stop (its trailing empty leases included). */
  wallSeconds: number
}

/** CONSUMERS consumers leasing (no long poll) and acking until `expected` were leased and each had its empty leases. */
async function drainTimed (baseUrl: string, organization: Organization, subscriptionId: string, expected: number): Promise<{ drain: Drain } & Timings> {
  const latenciesMs: number[] = []
  const drain = await drainSubscription(baseUrl, organization, subscriptionId, expected, 0, (_kind, ms, answered) => {
    if (answered) latenciesMs.push(ms)
  })
  return { drain, latenciesMs, drainSeconds: (drain.lastAckAt - drain.startedAt) / 1000, wallSeconds: (performance.now() - drain.startedAt) / 1000 }
}

/** The subscription's pending counts after the drain: all zero when every ack was recorded. */
async function pendingCounts (baseUrl: string, organization: Organization, subscriptionId: string): Promise<Pending> {
  const response = await fetch(`${baseUrl}/api/subscriptions/${subscriptionId}`, { headers: { 'x-api-key': organization.key } })
  if (response.status !== 200) throw new Error(`GET /api/subscriptions/{id} answered ${response.status}: ${await response.text()}`)
  return (await response.json() as { pending: Pending }).pending
}

/**
 * Every event the API accepted leased exactly once (no repeat, none missing, nothing else) and acked, the
 * organization's rows exactly those events, and the subscription left with nothing pending.
 */
function checkDrain (accepted: string[], rows: number, drain: Drain, pending: Pending): { ok: boolean, summary: string } {
  const counts = countDrain(accepted, drain)
  const left = pending.in_flight + pending.available + pending.dead
  // A stall alone is no mismatch here: what it left missing is.
  const ok = accepted.length > 0 && rows === accepted.length && counts.duplicates === 0 && counts.missing === 0 && counts.unknown === 0 &&
    counts.unacked === 0 && left === 0
  const counted = `${rows} rows = ${accepted.length} accepted, ${counts.leased} leased (${counts.duplicates} repeated, ${counts.missing} missing, ` +
    `${counts.unknown} unknown), ${drain.ackedIds.size} acked, ${left} left pending${drain.stalled ? ', STALLED' : ''}`
  if (accepted.length === 0) return { ok: false, summary: `${counted}: NOTHING TO CHECK (no event accepted)` }
  return { ok, summary: `${counted}: ${ok ? 'OK' : 'MISMATCH'}` }
}

/** A backlog of `events` in a fresh organization, a subscription at its beginning, and the drain. */
async function backlogAndDrain (server: BenchServer, name: string, events: number) {
  const organization = await createOrganization(server.baseUrl, name)
  const sent = await queueEvents(server.baseUrl, organization, events)
  // Right after the backlog's batches the server may still shed load (503 overloaded): `required` asks again.
  const { id: subscriptionId } = await required<{ id: string }>(server.baseUrl, organization, 'POST', '/api/subscriptions', 201,
    { kind: 'pull', name: 'bench', start: 'beginning' })
  // Only the drain is sampled: the backlog's ingest is the other scenarios' business.
  const { result: timed, rssSamples } = await sampleRss(server, () => drainTimed(server.baseUrl, organization, subscriptionId, sent.acceptedIds.length))
  return { organization, sent, subscriptionId, timed, rssSamples }
}

/**
 * subscription-drain: the backlog is queued first (not timed), then CONSUMERS consumers drain it through one
 * subscription. events/s = events leased and acked ÷ seconds from the first lease to the last ack;
 * requests/s and latency cover every lease and ack request.
 */
export async function measureSubscriptionDrain (server: BenchServer, databaseUrl: string, events: number, warmUpSeconds: number): Promise<ScenarioResult> {
  const name = 'subscription-drain'
  // The lease and ack paths are cold in a server that only ingested so far.
  await backlogAndDrain(server, `bench-warm-up-${name}`, subscriptionDrainEvents(warmUpSeconds))
  const { organization, sent, subscriptionId, timed, rssSamples } = await backlogAndDrain(server, `bench-${name}`, events)
  const { drain, latenciesMs, drainSeconds, wallSeconds } = timed
  const check = checkDrain(sent.acceptedIds, await countEvents(databaseUrl, organization.id),
    drain, await pendingCounts(server.baseUrl, organization, subscriptionId))
  const non2xx = non200(drain.statuses)
  // Leases and acks answer 200 only; a failed ingest request leaves the backlog short of its events.
  const failures = drainFailures(sent, non2xx, drain.statuses, drain.errors)
  const latency = percentiles(latenciesMs)
  const eventsPerSecond = drainSeconds > 0 ? drain.ackedIds.size / drainSeconds : 0
  console.log(`${name}: ${eventsPerSecond.toFixed(0)} events/s leased and acked (${drain.ackedIds.size} in ${drainSeconds.toFixed(2)} s, ` +
    `${CONSUMERS} consumers), p99 ${latency.p99.toFixed(1)} ms; ${check.summary}${failures.map((failure) => `; FAILED: ${failure}`).join('')}`)
  return {
    name,
    requestsPerSecond: wallSeconds > 0 ? drain.requests / wallSeconds : 0,
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
