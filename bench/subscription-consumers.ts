import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { withClient } from '../test/support/database.js'
import { sendFailures, type SentEvents } from './delivery-load.js'
import { describeStatuses } from './http-load.js'
import type { Organization } from './organizations.js'

/**
 * What subscription-drain and subscription-replay share: the consumers that lease and ack on one pull subscription,
 * the set-up calls, and the counts their checks are made of.
 */

export const CONSUMERS = 4
/** The lease's maximum `limit`: 4 × 100 in flight stays under the default max_in_flight (1 000). */
export const LEASE_LIMIT = 100
/** A consumer stops after this many empty leases in a row once the expected count has been leased. */
const EMPTY_LEASES_TO_STOP = 2
/** Before the count is reached an empty lease means "not readable yet" (an older transaction still open): ask again soon. */
const EMPTY_LEASE_PAUSE_MS = 5
/** With no lease or ack making progress for this long a drain gives up; the check then says what is missing. */
const STALL_MS = 30_000
const OVERLOADED_TRIES = 10

/** Events for a scenario scaled by BENCH_DURATION_SECONDS: `perSecond` × seconds, at least 2 000. */
export const scaledEvents = (perSecond: number, durationSeconds: number) => Math.max(2000, Math.round(perSecond * durationSeconds))

interface LeaseAnswer {
  lease_id: string | null
  events: Array<{ event_id: string }>
}

interface AckAnswer {
  acknowledged: string[]
}

export interface Pending { in_flight: number, available: number, dead: number }

/** What the consumers of one drain did, all of them together. */
export interface Drain {
  /** Every event id in every lease, repeats included (a repeat is a failure of the check). */
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
  /** The empty leases that ended the consumers, after everything was leased (with wait_seconds: long polls that wait it all). */
  trailingLeases: number
  statuses: Map<number, number>
  /** Requests that got no answer at all. */
  errors: number
  stalled: boolean
}

/** Each request's time: `lease` (one that did not end its consumer), `trailing` (one that did) or `ack`; `answered` false when it got no answer. */
export type Timed = (kind: 'lease' | 'trailing' | 'ack', ms: number, answered: boolean) => void

/** Any call with the organization's key, a server still shedding load (503 overloaded) asked again as createOrganization does. */
export async function call<T> (baseUrl: string, organization: Organization, method: string, path: string, body?: object): Promise<{ status: number, body: T | undefined, text: string }> {
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
    if (response.status !== 503) break
  }
  if (response === undefined) throw new Error(`${method} ${path}: no answer`)
  const text = await response.text()
  return { status: response.status, body: response.status < 300 ? JSON.parse(text) as T : undefined, text }
}

/** The set-up's calls: anything but the expected status ends the run with the server's answer. */
export async function required<T> (baseUrl: string, organization: Organization, method: string, path: string, status: number, body?: object): Promise<T> {
  const answer = await call<T>(baseUrl, organization, method, path, body)
  if (answer.status !== status || answer.body === undefined) throw new Error(`${method} ${path} answered ${answer.status}: ${answer.text}`)
  return answer.body
}

/** A lease or ack of a drain: the parsed body when 200, how long it took and whether it was answered, its status counted; never throws. */
async function post<T> (baseUrl: string, organization: Organization, path: string, body: object, drain: Drain): Promise<{ body: T | undefined, ms: number, answered: boolean }> {
  const started = performance.now()
  drain.requests++
  try {
    const response = await fetch(`${baseUrl}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': organization.key },
      body: JSON.stringify(body)
    })
    const text = await response.text()
    const ms = performance.now() - started
    drain.statuses.set(response.status, (drain.statuses.get(response.status) ?? 0) + 1)
    return { body: response.status === 200 ? JSON.parse(text) as T : undefined, ms, answered: true }
  } catch {
    drain.errors++
    return { body: undefined, ms: performance.now() - started, answered: false }
  }
}

/**
 * CONSUMERS loops of lease → ack, each until it has had EMPTY_LEASES_TO_STOP empty leases in a row after `expected`
 * events were leased (before that an empty lease means "not readable yet", or a rate cap holding it back). With
 * `waitSeconds` the leases long-poll, so an empty one is asked again at once; without, after EMPTY_LEASE_PAUSE_MS.
 */
export async function drainSubscription (baseUrl: string, organization: Organization, subscriptionId: string, expected: number, waitSeconds: number, timed: Timed): Promise<Drain> {
  const started = performance.now()
  const drain: Drain = {
    leasedIds: [], ackedIds: new Set(), leases: 0, perSecond: [], startedAt: started, lastLeaseAt: started, lastAckAt: started,
    requests: 0, trailingLeases: 0, statuses: new Map(), errors: 0, stalled: false
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
      const { body: lease, ms, answered } = await post<LeaseAnswer>(baseUrl, organization, `${path}/lease`, leaseBody, drain)
      const empty = lease === undefined || lease.lease_id === null || lease.events.length === 0
      // Only empty leases after the whole backlog was handed out count towards stopping.
      if (lease !== undefined && empty && drain.leasedIds.length >= expected) {
        emptyInARow++
        drain.trailingLeases++
        timed('trailing', ms, answered)
        continue
      }
      timed('lease', ms, answered)
      if (empty) {
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
      const { body: ack, ms: ackMs, answered: ackAnswered } = await post<AckAnswer>(baseUrl, organization, `${path}/ack`, { lease_id: lease.lease_id }, drain)
      timed('ack', ackMs, ackAnswered)
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

/** Each of `expected` leased once and acknowledged, nothing else: the counts, and whether they are all as they should be (not stalled either). */
export function countDrain (expected: string[], drain: Drain) {
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

export async function countEvents (databaseUrl: string, organizationId: string): Promise<number> {
  return await withClient(databaseUrl, async (client) => {
    const { rows } = await client.query<{ n: number }>('SELECT count(*)::int AS n FROM events WHERE organization_id = $1', [organizationId])
    return rows[0]?.n ?? 0
  })
}

/** Answers to leases and acks other than 200. */
export const non200 = (statuses: Iterable<[number, number]>) => [...statuses].reduce((sum, [status, count]) => status === 200 ? sum : sum + count, 0)

/** The ingest's failures, then the non-200 answers to leases and acks and the requests that got none. */
export function drainFailures (sent: SentEvents, non2xx: number, statuses: Map<number, number>, errors: number): string[] {
  return [
    ...sendFailures(sent),
    ...(non2xx > 0 ? [`${non2xx} non-200 answers to leases and acks (${describeStatuses(statuses)})`] : []),
    ...(errors > 0 ? [`${errors} lease or ack requests failed without an answer`] : [])
  ]
}
