import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { withClient } from '../test/support/database.js'
import { queueEvents, sendFailures } from './delivery-load.js'
import { describeStatuses } from './http-load.js'
import { createOrganization, type Organization } from './organizations.js'
import type { ScenarioResult } from './report.js'
import { peakMb, sampleRss, type BenchServer } from './server.js'
import { percentiles } from './stats.js'

/**
 * subscription-replay: a range the subscription has already read is replayed at a rate cap, and the bench
 * checks that the cap holds (the replay takes at least events ÷ cap seconds) and that every event of the range
 * comes back exactly once. Scaled by BENCH_DURATION_SECONDS like subscription-drain: 50 000 events at the default
 * 10 s (25 s at 2 000/s), 10 000 in CI's 2 s.
 */
const EVENTS_PER_SECOND = 5000
const MIN_EVENTS = 2000
export const DEFAULT_REPLAY_RATE = 2000
const CONSUMERS = 4
/** The lease's maximum `limit`: 4 × 100 in flight stays under the default max_in_flight (1 000). */
const LEASE_LIMIT = 100
/**
 * Replay leases long-poll: one the cap holds back waits in the server until a token is due (at a cap of 1/s, within
 * 1 s) instead of coming back empty. The first drain asks again after EMPTY_LEASE_PAUSE_MS, as subscription-drain does.
 */
const REPLAY_WAIT_SECONDS = 2
const EMPTY_LEASE_PAUSE_MS = 5
/** A consumer stops after this many empty leases in a row once the expected count has been leased. */
const EMPTY_LEASES_TO_STOP = 2
/** With no lease or ack making progress for this long a drain gives up; the check then says what is missing. */
const STALL_MS = 30_000
const PROGRESS_POLL_MS = 1000
/** The replayed range: one hour ending just after the ingest, which it covers. */
const RANGE_MS = 3600_000
/**
 * The cap bounds what the server hands out by its own clock from the PATCH; the bench's clock measures the same
 * interval from a little before the PATCH to a little after the last lease, so only clock drift could undercut it.
 */
const CAP_TOLERANCE_SECONDS = 0.05
const OVERLOADED_TRIES = 10

export const subscriptionReplayEvents = (durationSeconds: number) => Math.max(MIN_EVENTS, Math.round(EVENTS_PER_SECOND * durationSeconds))

/** The scenario's set-up, for the report's settings line. */
export function describeSubscriptionReplay (events: number, ratePerSecond: number): string {
  return `subscription-replay: ${events} events queued through batches of 100 and drained once by ${CONSUMERS} consumers leasing ` +
    `${LEASE_LIMIT}, then the subscription capped at ${ratePerSecond}/s and a one-hour range covering them replayed to the same consumers ` +
    `(leases with wait_seconds ${REPLAY_WAIT_SECONDS}); at least ${(events / ratePerSecond).toFixed(1)} s expected`
}

interface LeaseAnswer {
  lease_id: string | null
  events: Array<{ event_id: string }>
}

interface AckAnswer {
  acknowledged: string[]
}

interface SubscriptionAnswer {
  id: string
  position: string
  rate_limit_per_second: number | null
  pending: { in_flight: number, available: number, dead: number }
}

interface ReplayAnswer {
  replay_id: string
  total: number
  done: number
  status: 'running' | 'finished' | 'cancelled'
}

/** What the consumers of one drain did, all of them together. */
interface Drain {
  /** Every event id in every lease, repeats included. */
  leasedIds: string[]
  ackedIds: Set<string>
  /** Leases that handed out at least one event. */
  leases: number
  /** Events leased per whole second since the drain's start (by the lease's answer). */
  perSecond: number[]
  /** Bench clock (performance.now) of the first lease sent, the last lease answer with events, the last ack that acknowledged something. */
  startedAt: number
  lastLeaseAt: number
  lastAckAt: number
  requests: number
  /** The empty leases that ended the consumers, after everything was leased: long polls that wait their whole wait_seconds. */
  trailingLeases: number
  /** Every lease and ack but the trailing leases. */
  latenciesMs: number[]
  /** Leases alone: a lease holds the subscription's row, so these include waiting for the other consumers' leases. */
  leaseLatenciesMs: number[]
  statuses: Map<number, number>
  /** Requests that got no answer at all. */
  errors: number
  stalled: boolean
}

async function call<T> (baseUrl: string, organization: Organization, method: string, path: string, body?: object): Promise<{ status: number, body: T | undefined, text: string }> {
  let response: Response | undefined
  for (let tries = 0; tries < OVERLOADED_TRIES; tries++) {
    if (response !== undefined) {
      await response.body?.cancel()
      await sleep(1000 * Number(response.headers.get('retry-after') ?? 1))
    }
    response = await fetch(`${baseUrl}${path}`, {
      method,
      headers: { 'x-api-key': organization.key, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) })
    })
    // A server still shedding load after the ingest (503 overloaded) is asked again, as createOrganization does.
    if (response.status !== 503) break
  }
  if (response === undefined) throw new Error(`${method} ${path}: no answer`)
  const text = await response.text()
  return { status: response.status, body: response.status < 300 ? JSON.parse(text) as T : undefined, text }
}

/** The set-up's calls: anything but the expected status ends the run with the server's answer. */
async function required<T> (baseUrl: string, organization: Organization, method: string, path: string, status: number, body?: object): Promise<T> {
  const answer = await call<T>(baseUrl, organization, method, path, body)
  if (answer.status !== status || answer.body === undefined) throw new Error(`${method} ${path} answered ${answer.status}: ${answer.text}`)
  return answer.body
}

/** A lease or ack of a drain: the parsed body when 200 and how long it took, its status counted; never throws. */
async function post<T> (baseUrl: string, organization: Organization, path: string, body: object, drain: Drain): Promise<{ body: T | undefined, ms: number }> {
  const started = performance.now()
  drain.requests++
  try {
    const response = await fetch(`${baseUrl}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': organization.key },
      body: JSON.stringify(body)
    })
    const text = await response.text()
    drain.statuses.set(response.status, (drain.statuses.get(response.status) ?? 0) + 1)
    return { body: response.status === 200 ? JSON.parse(text) as T : undefined, ms: performance.now() - started }
  } catch {
    drain.errors++
    return { body: undefined, ms: performance.now() - started }
  }
}

/**
 * CONSUMERS loops of lease → ack, each until it has had EMPTY_LEASES_TO_STOP empty leases in a row after `expected`
 * events were leased (before that an empty lease means "not readable yet", or the cap holding it back).
 */
async function drainSubscription (baseUrl: string, organization: Organization, subscriptionId: string, expected: number, waitSeconds: number): Promise<Drain> {
  const started = performance.now()
  const drain: Drain = {
    leasedIds: [], ackedIds: new Set(), leases: 0, perSecond: [], startedAt: started, lastLeaseAt: started, lastAckAt: started,
    requests: 0, trailingLeases: 0, latenciesMs: [], leaseLatenciesMs: [], statuses: new Map(), errors: 0, stalled: false
  }
  const path = `/api/subscriptions/${subscriptionId}`
  const leaseBody = waitSeconds > 0 ? { limit: LEASE_LIMIT, wait_seconds: waitSeconds } : { limit: LEASE_LIMIT }
  let lastProgress = started
  const consumer = async () => {
    let emptyInARow = 0
    while (emptyInARow < EMPTY_LEASES_TO_STOP) {
      if (performance.now() - lastProgress > STALL_MS) {
        drain.stalled = true
        return
      }
      const { body: lease, ms } = await post<LeaseAnswer>(baseUrl, organization, `${path}/lease`, leaseBody, drain)
      if (lease !== undefined && lease.events.length === 0 && drain.leasedIds.length >= expected) {
        emptyInARow++
        drain.trailingLeases++
        continue
      }
      drain.latenciesMs.push(ms)
      drain.leaseLatenciesMs.push(ms)
      if (lease === undefined || lease.lease_id === null || lease.events.length === 0) {
        if (waitSeconds === 0 || lease === undefined) await sleep(EMPTY_LEASE_PAUSE_MS)
        continue
      }
      emptyInARow = 0
      const now = performance.now()
      lastProgress = drain.lastLeaseAt = now
      drain.leases++
      const second = Math.floor((now - started) / 1000)
      while (drain.perSecond.length <= second) drain.perSecond.push(0)
      drain.perSecond[second] = (drain.perSecond[second] ?? 0) + lease.events.length
      for (const event of lease.events) drain.leasedIds.push(event.event_id)
      const { body: ack, ms: ackMs } = await post<AckAnswer>(baseUrl, organization, `${path}/ack`, { lease_id: lease.lease_id }, drain)
      drain.latenciesMs.push(ackMs)
      const acknowledged = ack?.acknowledged ?? []
      if (acknowledged.length > 0) {
        for (const id of acknowledged) drain.ackedIds.add(id)
        lastProgress = drain.lastAckAt = performance.now()
      }
    }
  }
  await Promise.all(Array.from({ length: CONSUMERS }, consumer))
  return drain
}

/** Each of `expected` leased once and acknowledged, nothing else: the counts, and whether they are all as they should be. */
function countDrain (expected: string[], drain: Drain) {
  const expectedSet = new Set(expected)
  const distinct = new Set(drain.leasedIds)
  const counts = {
    leased: drain.leasedIds.length,
    distinct: distinct.size,
    duplicates: drain.leasedIds.length - distinct.size,
    missing: expected.filter((id) => !distinct.has(id)).length,
    unknown: [...distinct].filter((id) => !expectedSet.has(id)).length,
    unacked: [...distinct].filter((id) => !drain.ackedIds.has(id)).length
  }
  const ok = expected.length > 0 && counts.duplicates === 0 && counts.missing === 0 && counts.unknown === 0 && counts.unacked === 0 && !drain.stalled
  return { ...counts, ok }
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

async function countEvents (databaseUrl: string, organizationId: string): Promise<number> {
  return await withClient(databaseUrl, async (client) => {
    const { rows } = await client.query<{ n: number }>('SELECT count(*)::int AS n FROM events WHERE organization_id = $1', [organizationId])
    return rows[0]?.n ?? 0
  })
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
  const first = await drainSubscription(baseUrl, organization, subscription.id, accepted.length, 0)
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
  const draining = sampleRss(server, () => drainSubscription(baseUrl, organization, subscription.id, replay.total, REPLAY_WAIT_SECONDS))
  const [{ result: again, rssSamples }, progress] = await Promise.all([draining, pollProgress(baseUrl, organization, replayPath, draining)])
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

  const non2xx = [...first.statuses, ...again.statuses].reduce((sum, [status, count]) => status === 200 ? sum : sum + count, 0)
  const failures = [
    ...sendFailures(sent),
    ...(non2xx > 0 ? [`${non2xx} non-200 answers to leases and acks (${describeStatuses(new Map([...first.statuses, ...again.statuses]))})`] : []),
    ...(first.errors + again.errors > 0 ? [`${first.errors + again.errors} lease or ack requests failed without an answer`] : [])
  ]
  const latency = percentiles(again.latenciesMs)
  const leaseLatency = percentiles(again.leaseLatenciesMs)
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
