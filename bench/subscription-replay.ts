import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { queueEvents } from './delivery-load.js'
import { createOrganization, type Organization } from './organizations.js'
import type { ScenarioResult } from './report.js'
import { peakMb, sampleRss, type BenchServer } from './server.js'
import { percentiles } from './stats.js'
import {
  call, CONSUMERS, countDrain, countEvents, drainFailures, drainSubscription, LEASE_LIMIT, non200, required, scaledEvents, type Drain, type Pending
} from './subscription-consumers.js'

/**
 * subscription-replay: a range the subscription has already read is replayed at a rate cap, and the bench
 * checks that the cap holds (the replay takes at least events ÷ cap seconds) and that every event of the range
 * comes back exactly once. Scaled by BENCH_DURATION_SECONDS like subscription-drain: 50 000 events at the default
 * 10 s (25 s at 2 000/s), 10 000 in CI's 2 s.
 */
const EVENTS_PER_SECOND = 5000
export const DEFAULT_REPLAY_RATE = 2000
/**
 * Replay leases long-poll: one the cap holds back waits in the server until a token is due (at a cap of 1/s, within
 * 1 s) instead of coming back empty. The first drain asks again after a short pause, as subscription-drain does.
 */
const REPLAY_WAIT_SECONDS = 2
const PROGRESS_POLL_MS = 1000
/** The replayed range: one hour ending just after the ingest, which it covers. */
const RANGE_MS = 3600_000
/**
 * The cap bounds what the server hands out by its own clock from the PATCH; the bench's clock measures the same
 * interval from a little before the PATCH to a little after the last lease, so only clock drift could undercut it.
 */
const CAP_TOLERANCE_SECONDS = 0.05

export const subscriptionReplayEvents = (durationSeconds: number) => scaledEvents(EVENTS_PER_SECOND, durationSeconds)

/** The scenario's set-up, for the report's settings line. */
export function describeSubscriptionReplay (events: number, ratePerSecond: number): string {
  return `subscription-replay: ${events} events queued through batches of 100 and drained once by ${CONSUMERS} consumers leasing ` +
    `${LEASE_LIMIT}, then the subscription capped at ${ratePerSecond}/s and a one-hour range covering them replayed to the same consumers ` +
    `(leases with wait_seconds ${REPLAY_WAIT_SECONDS}); at least ${(events / ratePerSecond).toFixed(1)} s expected`
}

interface SubscriptionAnswer {
  id: string
  position: string
  rate_limit_per_second: number | null
  pending: Pending
}

interface ReplayAnswer {
  replay_id: string
  total: number
  done: number
  status: 'running' | 'finished' | 'cancelled'
}

/** A drain and its requests' times. */
interface TimedDrain {
  drain: Drain
  /** Every lease and ack but the trailing leases, answered or not. */
  latenciesMs: number[]
  /** Leases alone: a lease holds the subscription's row, so these include waiting for the other consumers' leases. */
  leaseLatenciesMs: number[]
}

async function drainTimed (baseUrl: string, organization: Organization, subscriptionId: string, expected: number, waitSeconds: number): Promise<TimedDrain> {
  const latenciesMs: number[] = []
  const leaseLatenciesMs: number[] = []
  const drain = await drainSubscription(baseUrl, organization, subscriptionId, expected, waitSeconds, (kind, ms) => {
    if (kind === 'trailing') return
    latenciesMs.push(ms)
    if (kind === 'lease') leaseLatenciesMs.push(ms)
  })
  return { drain, latenciesMs, leaseLatenciesMs }
}

/** Polls the replay's progress until `stop` resolves, then once more: the samples, oldest first. */
async function pollProgress (baseUrl: string, organization: Organization, path: string, stop: Promise<unknown>): Promise<ReplayAnswer[]> {
  const samples: ReplayAnswer[] = []
  let stopped = false
  // Whether the drain succeeded is its caller's business: here it only ends the polling.
  const ended = stop.then(() => undefined, () => undefined).finally(() => { stopped = true })
  const sample = async () => {
    const answer = await call<ReplayAnswer>(baseUrl, organization, 'GET', path).catch(() => undefined)
    if (answer?.body !== undefined) samples.push(answer.body)
  }
  while (!stopped) {
    await sample()
    await Promise.race([sleep(PROGRESS_POLL_MS), ended])
  }
  await sample()
  return samples
}

/**
 * A position's place in the log, comparable: the cursor is opaque to clients, but the bench (like the replay tests)
 * reads its "<txid>.<seq>" to tell a position that moved back from one the live read moved on (an empty read moves
 * the frontier, and with it the floor, up to the oldest running transaction).
 */
function placeOf (cursor: string): bigint {
  const [txid, seq] = Buffer.from(cursor, 'base64url').toString().split('.')
  return BigInt(txid ?? 0) * 2n ** 64n + BigInt(seq ?? 0)
}

/** Events per second over the first and the last tenth of the seconds a drain handed events out in (at least one second each). */
function edgeRates (perSecond: number[]): { first: number, last: number } {
  const tenth = Math.max(1, Math.round(perSecond.length / 10))
  const rateOf = (seconds: number[]) => seconds.reduce((sum, count) => sum + count, 0) / Math.max(seconds.length, 1)
  return { first: rateOf(perSecond.slice(0, tenth)), last: rateOf(perSecond.slice(-tenth)) }
}

const pendingLeft = (subscription: SubscriptionAnswer) => subscription.pending.in_flight + subscription.pending.available + subscription.pending.dead
const thousands = (value: number) => value.toLocaleString('en-US')

/**
 * subscription-replay, on the ingest scenarios' server: a fresh organization and a pull subscription at its
 * beginning; `events` events queued (batches of 100, not timed) and drained once by CONSUMERS consumers (lease
 * 100, ack); then PATCH rate_limit_per_second = `ratePerSecond` (an empty bucket), a replay of the hour ending
 * after the ingest, and the same consumers draining it with long-polling leases while its progress is polled.
 * events/s in the table = events replayed ÷ seconds from POST /replay to the last ack; requests/s and latency
 * cover the replay's leases and acks over that time, not the empty long polls that end the consumers.
 */
export async function measureSubscriptionReplay (server: BenchServer, databaseUrl: string, events: number, ratePerSecond: number): Promise<ScenarioResult> {
  const name = 'subscription-replay'
  const { baseUrl } = server
  const organization = await createOrganization(baseUrl, `bench-${name}`)
  const subscription = await required<SubscriptionAnswer>(baseUrl, organization, 'POST', '/api/subscriptions', 201,
    { kind: 'pull', name: 'bench-replay', start: 'beginning' })
  const path = `/api/subscriptions/${subscription.id}`

  const sent = await queueEvents(baseUrl, organization, events)
  // Every event's created_at is its transaction's start, before its answer: the range ends after the last answer.
  const to = new Date(Date.now() + 1)
  const from = new Date(to.getTime() - RANGE_MS)
  const accepted = sent.acceptedIds
  // Its times are not reported: only its counts and its rate.
  const first = await drainSubscription(baseUrl, organization, subscription.id, accepted.length, 0, () => {})
  const firstCounts = countDrain(accepted, first)
  const before = await required<SubscriptionAnswer>(baseUrl, organization, 'GET', path, 200)
  const firstSeconds = (first.lastAckAt - first.startedAt) / 1000
  console.log(`${name}: first drain ${thousands(first.ackedIds.size)} events in ${firstSeconds.toFixed(2)} s ` +
    `(${(first.ackedIds.size / Math.max(firstSeconds, 1e-3)).toFixed(0)}/s), ${firstCounts.duplicates} repeated, ${firstCounts.missing} missing, ` +
    `${pendingLeft(before)} left pending`)

  const patchedAt = performance.now()
  const capped = await required<SubscriptionAnswer>(baseUrl, organization, 'PATCH', path, 200, { rate_limit_per_second: ratePerSecond })
  const replayStartedAt = performance.now()
  const replay = await required<ReplayAnswer>(baseUrl, organization, 'POST', `${path}/replay`, 202, { from: from.toISOString(), to: to.toISOString() })
  const replayPath = `${path}/replays/${replay.replay_id}`
  // Only the replay's drain is sampled and timed.
  const draining = sampleRss(server, () => drainTimed(baseUrl, organization, subscription.id, replay.total, REPLAY_WAIT_SECONDS))
  const [{ result: { drain: again, latenciesMs, leaseLatenciesMs }, rssSamples }, progress] = await Promise.all([draining, pollProgress(baseUrl, organization, replayPath, draining)])
  const after = await required<SubscriptionAnswer>(baseUrl, organization, 'GET', path, 200)
  const rows = await countEvents(databaseUrl, organization.id)

  const counts = countDrain(accepted, again)
  const seconds = (again.lastAckAt - replayStartedAt) / 1000
  const fromPatchSeconds = (again.lastLeaseAt - patchedAt) / 1000
  const minimumSeconds = accepted.length / ratePerSecond
  const rate = seconds > 0 ? again.ackedIds.size / seconds : 0
  const last = progress.at(-1)
  const monotonic = progress.every((sample, index) => index === 0 || sample.done >= (progress[index - 1]?.done ?? 0))
  const progressOk = last !== undefined && last.status === 'finished' && last.done === replay.total && monotonic
  const capOk = fromPatchSeconds >= minimumSeconds - CAP_TOLERANCE_SECONDS
  const movedBack = placeOf(after.position) < placeOf(before.position)
  const positionOk = !movedBack && pendingLeft(after) === 0
  const ok = firstCounts.ok && counts.ok && rows === accepted.length && accepted.length === events && replay.total === accepted.length &&
    progressOk && capOk && positionOk && capped.rate_limit_per_second === ratePerSecond

  const peakSecond = Math.max(0, ...again.perSecond)
  const edges = edgeRates(again.perSecond)
  const summary = `${thousands(rows)} rows = ${thousands(accepted.length)} accepted of ${thousands(events)}; first drain: ${thousands(firstCounts.distinct)} leased once ` +
    `(${firstCounts.duplicates} repeated, ${firstCounts.missing} missing); replay total ${thousands(replay.total)}: ${thousands(counts.leased)} replayed, ` +
    `${thousands(counts.distinct)} distinct (${counts.duplicates} duplicates, ${counts.missing} missing, ${counts.unknown} unknown, ${counts.unacked} unacked) ` +
    `in ${seconds.toFixed(2)} s ${seconds >= minimumSeconds ? '≥' : '<'} ${minimumSeconds.toFixed(2)} s expected at ${thousands(ratePerSecond)}/s (${fromPatchSeconds.toFixed(2)} s from the PATCH: ` +
    `cap ${capOk ? 'held' : 'EXCEEDED'}); progress ${last === undefined ? 'never read' : `${thousands(last.done)}/${thousands(last.total)} ${last.status}`}` +
    `${monotonic ? '' : ' (WENT BACK)'}${capped.rate_limit_per_second === ratePerSecond ? '' : `; PATCH answered rate_limit_per_second ${String(capped.rate_limit_per_second)}`}; position ${movedBack ? 'MOVED BACK' : after.position === before.position ? 'unchanged' : 'not moved back'}, ${pendingLeft(after)} left pending` +
    `${again.stalled || first.stalled ? ', STALLED' : ''}: ${accepted.length === 0 ? 'NOTHING TO CHECK' : ok ? 'OK' : 'MISMATCH'}`

  const non2xx = non200([...first.statuses, ...again.statuses])
  const failures = drainFailures(sent, non2xx, new Map([...first.statuses, ...again.statuses]), first.errors + again.errors)
  const latency = percentiles(latenciesMs)
  const leaseLatency = percentiles(leaseLatenciesMs)
  console.log(`${name}: ${thousands(again.ackedIds.size)} replayed in ${seconds.toFixed(2)} s = ${rate.toFixed(0)}/s ` +
    `(${(100 * rate / ratePerSecond).toFixed(1)} % of the ${thousands(ratePerSecond)}/s cap; expected ≥ ${minimumSeconds.toFixed(2)} s), ` +
    `${thousands(again.leases)} leases with events (${(counts.leased / Math.max(again.leases, 1)).toFixed(1)} per lease), ` +
    `${edges.first.toFixed(0)}/s over its first tenth, ${edges.last.toFixed(0)}/s over its last, peak ${thousands(peakSecond)} in one second; ` +
    `lease p50 ${leaseLatency.p50.toFixed(0)} ms, p99 ${leaseLatency.p99.toFixed(0)} ms; progress polled ${progress.length}×; ${summary}${failures.map((failure) => `; FAILED: ${failure}`).join('')}`)
  return {
    name,
    requestsPerSecond: seconds > 0 ? (again.requests - again.trailingLeases) / seconds : 0,
    eventsPerSecond: rate,
    p50: latency.p50,
    p99: latency.p99,
    max: latency.max,
    non2xx: non2xx + first.errors + again.errors,
    peakRssMb: peakMb(rssSamples),
    eventsPerInsert: undefined,
    rowCheck: summary,
    rowCheckOk: ok,
    failures
  }
}
