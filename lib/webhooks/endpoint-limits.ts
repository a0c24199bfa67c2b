export interface EndpointLimitsOptions {
  /** Sends in flight to an endpoint this worker has not measured yet. */
  initial: number
  /** The most it may grow to. */
  max: number
}

/** What an attempt's outcome says about the endpoint's capacity. */
export interface EndpointSignal {
  succeeded: boolean
  /** 429, 5xx, a timeout or a connection error: the receiver is overloaded or failing. */
  congested: boolean
  /** Retry-After on 429/503: send it nothing until then. */
  retryAfterSeconds: number | undefined
}

interface EndpointState {
  window: number
  inFlight: number
  pausedUntil: number
  lastDecrease: number
  lastUsed: number
}

// Halve at most this often, so a burst of failures from one congestion event counts once.
const DECREASE_INTERVAL_MS = 1000
// A receiver asking for a longer pause still gets attempts this often (its deliveries are rescheduled anyway).
const MAX_PAUSE_MS = 60_000
// Endpoints unused this long are forgotten (they start again from `initial`).
const FORGET_AFTER_MS = 10 * 60_000

/**
 * Per-endpoint concurrency that adapts (additive increase, multiplicative decrease, as TCP does): each success
 * widens the window by 1/window (about one more slot per window of successes), congestion (429, 5xx, timeouts,
 * connection errors) halves it, and a Retry-After pauses the endpoint. Other failures (400, 404, ...) are the
 * receiver refusing this request, not a sign of load, and leave the window alone. Ours because it is a few
 * lines tied to our outcome classes; job-queue libraries offer fixed limits only.
 */
export class EndpointLimits {
  private readonly states = new Map<string, EndpointState>()
  private lastForget = 0

  constructor (private readonly options: EndpointLimitsOptions) {}

  /** Sends this endpoint may start now. */
  available (webhookId: string, now = Date.now()): number {
    const state = this.states.get(webhookId)
    if (!state) return this.options.initial
    if (state.pausedUntil > now) return 0
    return Math.max(0, Math.floor(state.window) - state.inFlight)
  }

  /** Endpoints whose room differs from a new endpoint's, for the claim. */
  capacities (now = Date.now()): Array<[webhookId: string, capacity: number]> {
    this.forgetIdle(now)
    const differing: Array<[string, number]> = []
    for (const id of this.states.keys()) {
      const room = this.available(id, now)
      if (room !== this.options.initial) differing.push([id, room])
    }
    return differing
  }

  started (webhookId: string, now = Date.now()): void {
    const state = this.stateOf(webhookId, now)
    state.inFlight++
    state.lastUsed = now
  }

  finished (webhookId: string, signal: EndpointSignal, now = Date.now()): void {
    const state = this.stateOf(webhookId, now)
    state.inFlight = Math.max(0, state.inFlight - 1)
    state.lastUsed = now
    if (signal.retryAfterSeconds !== undefined) {
      state.pausedUntil = Math.max(state.pausedUntil, now + Math.min(signal.retryAfterSeconds * 1000, MAX_PAUSE_MS))
    }
    if (signal.succeeded) {
      state.window = Math.min(this.options.max, state.window + 1 / state.window)
    } else if (signal.congested && now - state.lastDecrease >= DECREASE_INTERVAL_MS) {
      state.window = Math.max(1, state.window / 2)
      state.lastDecrease = now
    }
  }

  /** The current window (for tests and stats). */
  windowOf (webhookId: string): number {
    return this.states.get(webhookId)?.window ?? this.options.initial
  }

  private stateOf (webhookId: string, now: number): EndpointState {
    let state = this.states.get(webhookId)
    if (!state) {
      state = { window: this.options.initial, inFlight: 0, pausedUntil: 0, lastDecrease: 0, lastUsed: now }
      this.states.set(webhookId, state)
    }
    return state
  }

  private forgetIdle (now: number): void {
    if (now - this.lastForget < FORGET_AFTER_MS / 10) return
    this.lastForget = now
    for (const [id, state] of this.states) {
      if (state.inFlight === 0 && now - state.lastUsed > FORGET_AFTER_MS && state.pausedUntil <= now) this.states.delete(id)
    }
  }
}

/**
 * The most of a worker's slots (WEBHOOK_WORKER_CONCURRENCY) one organization's endpoints may hold at once: half,
 * rounded down, and at least 1. Whatever one organization's endpoints do (hang until the deadline, trickle,
 * fail), every other organization has the other half. Per-endpoint windows alone do not bound this: an
 * organization's endpoints have one window each, and it may register dozens of them.
 */
export function organizationSlotLimit (workerConcurrency: number): number {
  return Math.max(1, Math.floor(workerConcurrency / 2))
}

/** Sends in flight per organization in one worker, and the room each has for the claim under its limit. */
export class OrganizationSlots {
  private readonly inFlight = new Map<string, number>()

  constructor (readonly limit: number) {}

  started (organizationId: string): void {
    this.inFlight.set(organizationId, (this.inFlight.get(organizationId) ?? 0) + 1)
  }

  finished (organizationId: string): void {
    const left = (this.inFlight.get(organizationId) ?? 0) - 1
    // Organizations with nothing in flight are forgotten: the claim gives them the whole limit by default.
    if (left > 0) this.inFlight.set(organizationId, left)
    else this.inFlight.delete(organizationId)
  }

  inFlightOf (organizationId: string): number {
    return this.inFlight.get(organizationId) ?? 0
  }

  /** Organizations with sends in flight and the room each has left, for the claim. */
  capacities (): Array<[organizationId: string, capacity: number]> {
    return [...this.inFlight].map(([id, count]) => [id, Math.max(0, this.limit - count)])
  }
}
