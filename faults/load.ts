import { setTimeout as sleep } from 'node:timers/promises'
import type { Organization } from './api.js'
import { CONNECTIONS, HOOK_EVERY, REQUEST_TIMEOUT_MS, REQUESTS_PER_SECOND, RUN_ID, TYPES } from './settings.js'

export interface Target {
  label: string
  baseUrl: string
}

export interface LoadOptions {
  name: string
  targets: Target[]
  organization: Organization
  /** Type of every HOOK_EVERY-th event (a type some webhook subscribes to). */
  hookedType: string
  /** Hooked events at most; unset = no cap. */
  maxHooked?: number
  /** Hard stop, whatever the phase is doing. */
  maxSeconds: number
}

/** What one instance answered during a load run. */
export interface InstanceTally {
  ok: number
  status503: number
  other5xx: number
  /** Any other answer (4xx such as 401 or 429): the load's requests are valid, so none is expected. */
  otherStatus: number
  /** Refused, reset or closed connections: expected only while the instance is killed. */
  connectionErrors: number
  timeouts: number
  /** The first few unexpected answers and errors, as evidence. */
  samples: string[]
  /** The first few 503 answers: evidence when a phase without an outage gets them. */
  samples503: string[]
}

export interface LoadResult {
  sent: number
  /** Ids of the events a 2xx answer acknowledged: each must be stored. */
  acked: string[]
  /** The acknowledged events of a hooked type: each must reach the healthy receiver. */
  hookedAcked: string[]
  perInstance: Map<string, InstanceTally>
}

const SAMPLES = 3

export function emptyTally (): InstanceTally {
  return { ok: 0, status503: 0, other5xx: 0, otherStatus: 0, connectionErrors: 0, timeouts: 0, samples: [], samples503: [] }
}

function describeError (error: unknown): string {
  if (!(error instanceof Error)) return String(error)
  const cause = error.cause instanceof Error ? `: ${(error.cause as NodeJS.ErrnoException).code ?? error.cause.message}` : ''
  return `${error.message}${cause}`
}

/**
 * POST /api/events from CONNECTIONS concurrent loops, each request to the next instance in turn, paced to
 * REQUESTS_PER_SECOND in all and bounded by `maxSeconds` (so at most rate × seconds requests). Every answer
 * is recorded per instance; a loop never retries, so a request cut off by a fault is simply not acknowledged.
 */
export class Load {
  private sent = 0
  private hookedSent = 0
  private stopped = false
  private readonly acked: string[] = []
  private readonly hookedAcked: string[] = []
  private readonly tallies = new Map<string, InstanceTally>()
  private readonly started = Date.now()
  private readonly loops: Array<Promise<void>>

  private constructor (private readonly options: LoadOptions) {
    for (const target of options.targets) this.tallies.set(target.label, emptyTally())
    this.loops = Array.from({ length: CONNECTIONS }, (_, index) => this.connection(index))
  }

  static start (options: LoadOptions): Load {
    return new Load(options)
  }

  /** Acknowledged so far: compared before and after a window (e.g. while Redis is down). */
  get ackedCount (): number {
    return this.acked.length
  }

  get hookedCount (): number {
    return this.hookedSent
  }

  async stop (): Promise<LoadResult> {
    this.stopped = true
    await Promise.all(this.loops)
    return {
      sent: this.sent,
      acked: this.acked,
      hookedAcked: this.hookedAcked,
      perInstance: this.tallies
    }
  }

  private async connection (index: number): Promise<void> {
    const intervalMs = CONNECTIONS * 1000 / REQUESTS_PER_SECOND
    const deadline = this.started + this.options.maxSeconds * 1000
    // Spread the loops' start so the requests do not come in waves.
    let next = Date.now() + Math.random() * intervalMs
    let turn = index
    while (!this.stopped && Date.now() < deadline) {
      await sleep(Math.max(0, next - Date.now()))
      if (this.stopped) break
      const target = this.options.targets[turn++ % this.options.targets.length]
      if (target) await this.request(target)
      // A slow answer does not earn a burst afterwards.
      next = Math.max(next + intervalMs, Date.now())
    }
  }

  private nextType (): string {
    const { maxHooked } = this.options
    const hooked = this.sent % HOOK_EVERY === 0 && (maxHooked === undefined || this.hookedSent < maxHooked)
    if (hooked) this.hookedSent++
    return hooked ? this.options.hookedType : TYPES.plain
  }

  private async request (target: Target): Promise<void> {
    const type = this.nextType()
    const dedupId = `${RUN_ID}-${this.options.name}-${this.sent++}`
    const tally = this.tallies.get(target.label) ?? emptyTally()
    try {
      const response = await fetch(`${target.baseUrl}/api/events`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-api-key': this.options.organization.key },
        body: JSON.stringify({ type, dedup_id: dedupId, source: 'faults', payload: { phase: this.options.name, sequence: this.sent } }),
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS)
      })
      this.record(tally, target, type, response.status, await response.text())
    } catch (error) {
      const timedOut = error instanceof Error && error.name === 'TimeoutError'
      if (timedOut) tally.timeouts++
      else tally.connectionErrors++
      if (tally.samples.length < SAMPLES) tally.samples.push(`${target.label}: ${timedOut ? 'timeout' : describeError(error)}`)
    }
  }

  private record (tally: InstanceTally, target: Target, type: string, status: number, body: string): void {
    const eventId = status === 200 || status === 201 ? eventIdOf(body) : undefined
    if (eventId !== undefined) {
      tally.ok++
      this.acked.push(eventId)
      if (type !== TYPES.plain) this.hookedAcked.push(eventId)
      return
    }
    if (status === 503) tally.status503++
    else if (status >= 500) tally.other5xx++
    else tally.otherStatus++
    const samples = status === 503 ? tally.samples503 : tally.samples
    if (samples.length < SAMPLES) samples.push(`${target.label}: ${status} ${body.slice(0, 300)}`)
  }
}

/** The event id of a 200/201 answer; undefined if the body is not what the API documents. */
function eventIdOf (body: string): string | undefined {
  try {
    const eventId = (JSON.parse(body) as { event_id?: unknown }).event_id
    return typeof eventId === 'string' ? eventId : undefined
  } catch {
    return undefined
  }
}
