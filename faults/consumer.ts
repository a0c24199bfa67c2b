import { setTimeout as sleep } from 'node:timers/promises'
import type { Organization } from './api.js'
import { emptyTally, type InstanceTally, type Target } from './load.js'
import { REQUEST_TIMEOUT_MS } from './settings.js'

/** Concurrent lease loops per subscription: its leases are serialized by the service, its acks are not. */
const LOOPS = 2
const LEASE_LIMIT = 100
/** Short, so that events whose lease answer or ack a fault cut off come again soon. */
const LEASE_SECONDS = 10
/** Each lease is a long poll, but a short one, so that stopping a consumer takes little longer than this. */
const WAIT_SECONDS = 2
/** After a failed call (connection refused, 503 while PostgreSQL restarts), the next try, on the other instance. */
const RETRY_MS = 200
const SAMPLES = 3

/** Every consumer running, so that each exit path (failure, Ctrl-C) can end them all. */
const running = new Set<Consumer>()

/** Ends every consumer without waiting for the acks under way (a failed run). */
export async function abandonConsumers (): Promise<void> {
  await Promise.all([...running].map((consumer) => consumer.stop(true)))
}

interface LeasedEvent {
  event_id: string
  created_at: string
}

interface LeaseAnswer {
  lease_id: string | null
  leased_until: string | null
  events: LeasedEvent[]
}

interface AckAnswer {
  acknowledged: string[]
  not_found: string[]
}

/**
 * A consumer of one pull subscription, as an application would write it: loops that lease (with wait_seconds)
 * and ack the whole lease, each call to the next API instance in turn, retrying whatever a fault cuts off. A
 * lease whose answer was lost, or whose ack never got through before it ran out, hands its events out again:
 * those come twice, which is counted, never judged. What counts is that every event arrives at least once.
 */
export class Consumer {
  /** How many times each event was handed to this consumer (in a lease answer that reached it). */
  readonly receptions = new Map<string, number>()
  /** When each event was last handed to it (ms since the epoch). */
  readonly lastReceivedAt = new Map<string, number>()
  /** Receptions in all, duplicates included: grows while the consumer makes progress. */
  received = 0
  /** Creation time (ms) of the newest event received so far: how far into the log the subscription has read. */
  newestCreatedAt = 0
  leases = 0
  acknowledged = 0
  /** Ids an ack named that the lease no longer held (it had run out): they come again. */
  notFound = 0
  /** Leases whose ack got no answer before they ran out: their events come again. */
  acksGivenUp = 0
  /** Every lease and ack answer, per instance. */
  readonly tallies = new Map<string, InstanceTally>()
  /**
   * Pause after each round (lease and ack) of a loop: with a rate cap, tokens gather meanwhile, so the consumer
   * makes a few leases of several events a second rather than one lease per token. 0: as fast as it goes.
   */
  pauseMs: number
  private stopped = false
  private abandoned = false
  private readonly loops: Array<Promise<void>>

  constructor (readonly name: string, private readonly subscriptionId: string, private readonly organization: Organization, private readonly targets: Target[], pauseMs = 0) {
    this.pauseMs = pauseMs
    for (const target of targets) this.tallies.set(target.label, emptyTally())
    running.add(this)
    this.loops = Array.from({ length: LOOPS }, (_, index) => this.loop(index))
  }

  /** Ends the loops once their lease is acked; `abandon` (a failed run) gives up the acks under way. */
  async stop (abandon = false): Promise<void> {
    this.stopped = true
    this.abandoned ||= abandon
    await Promise.all(this.loops)
    running.delete(this)
  }

  private async loop (index: number): Promise<void> {
    let turn = index
    const next = () => this.targets[turn++ % this.targets.length] as Target
    while (!this.stopped) {
      const lease = await this.call<LeaseAnswer>(next(), 'lease',
        { limit: LEASE_LIMIT, lease_seconds: LEASE_SECONDS, wait_seconds: WAIT_SECONDS }, WAIT_SECONDS * 1000 + REQUEST_TIMEOUT_MS)
      if (lease === undefined) {
        await sleep(RETRY_MS)
        continue
      }
      this.leases++
      if (lease.lease_id !== null && lease.events.length > 0) {
        this.record(lease.events)
        const until = lease.leased_until === null ? Date.now() : Date.parse(lease.leased_until)
        await this.ack(lease.lease_id, lease.events.map((event) => event.event_id), until, next)
      }
      if (this.pauseMs > 0 && !this.stopped) await sleep(this.pauseMs)
    }
  }

  private record (events: LeasedEvent[]): void {
    const now = Date.now()
    for (const event of events) {
      this.receptions.set(event.event_id, (this.receptions.get(event.event_id) ?? 0) + 1)
      this.lastReceivedAt.set(event.event_id, now)
      this.newestCreatedAt = Math.max(this.newestCreatedAt, Date.parse(event.created_at))
    }
    this.received += events.length
  }

  /** Acks the lease's events, retrying on the next instance until an answer comes or the lease has run out. */
  private async ack (leaseId: string, eventIds: string[], until: number, next: () => Target): Promise<void> {
    for (;;) {
      const answer = await this.call<AckAnswer>(next(), 'ack', { lease_id: leaseId, event_ids: eventIds }, REQUEST_TIMEOUT_MS)
      if (answer !== undefined) {
        this.acknowledged += answer.acknowledged.length
        this.notFound += answer.not_found.length
        return
      }
      if (Date.now() >= until || this.abandoned) {
        this.acksGivenUp++
        return
      }
      await sleep(RETRY_MS)
    }
  }

  /** One POST on the subscription; the answer's body if it was 200, undefined (tallied) otherwise. */
  private async call<T> (target: Target, action: 'lease' | 'ack', body: object, timeoutMs: number): Promise<T | undefined> {
    const tally = this.tallies.get(target.label) ?? emptyTally()
    let status: number
    let text: string
    try {
      const response = await fetch(`${target.baseUrl}/api/subscriptions/${this.subscriptionId}/${action}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-api-key': this.organization.key },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(timeoutMs)
      })
      status = response.status
      text = await response.text()
    } catch (error) {
      // Counted, not sampled: the samples are kept for the answers that fail a check.
      if (error instanceof Error && error.name === 'TimeoutError') tally.timeouts++
      else tally.connectionErrors++
      return undefined
    }
    if (status === 200) {
      try {
        const parsed = JSON.parse(text) as T
        tally.ok++
        return parsed
      } catch {
        // Counted below as an unexpected answer.
      }
    }
    if (status === 503) tally.status503++
    else if (status >= 500) tally.other5xx++
    else tally.otherStatus++
    const samples = status === 503 ? tally.samples503 : tally.samples
    if (samples.length < SAMPLES) samples.push(`${this.name} ${action} at ${target.label}: ${status} ${text.slice(0, 300)}`)
    return undefined
  }
}
