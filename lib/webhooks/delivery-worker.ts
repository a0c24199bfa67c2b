import { setMaxListeners } from 'node:events'
import type { Pool } from 'pg'
import { claimDeliveries, recordAttempts, releaseClaims, type AttemptOutcome, type ClaimedDelivery } from '../../db/deliveries.js'
import { inTransaction } from '../../db/transaction.js'
import type { Config } from '../config.js'
import { DELIVERIES_CHANNEL } from '../../db/wake-ups.js'
import type { WakeUpListener } from '../wake-ups/listener.js'
import { EndpointLimits, OrganizationSlots, organizationSlotLimit, type EndpointSignal } from './endpoint-limits.js'
import { nextRetryDelayMs, parseRetrySchedule, type RetrySchedule } from './retry-schedule.js'
import type { SecretBox } from './secret-box.js'
import { createWebhookSender, type SendOutcome, type WebhookSender } from './send.js'
import { activeSecrets, signWebhook } from './signing.js'
import type { Resolver } from './url-guard.js'

export interface DeliveryWorkerOptions {
  pool: Pool
  /** The process's listener: a NOTIFY on the deliveries channel, or a reconnect, wakes the worker. */
  wakeUps: WakeUpListener
  log: { info: (message: string) => void, warn: (details: object, message: string) => void }
  schedule: RetrySchedule
  timeoutMs: number
  allowPrivateUrls: boolean
  disableAfterFailures: number
  /** Sends in flight to one endpoint to start with; it adapts between 1 and endpointMaxConcurrency. */
  endpointConcurrency: number
  endpointMaxConcurrency: number
  workerConcurrency: number
  claimSeconds: number
  pollIntervalMs: number
  /** Decrypts the stored signing secrets. */
  secrets: SecretBox
  /** Hears of every attempt sent (not of sends cut short by stop()), with when its delivery was queued (metrics). */
  onAttempt?: AttemptObserver | undefined
  /** How long idle connections to receivers stay open (30 s by default; tests shorten it to watch them close). */
  keepAliveTimeoutMs?: number
  /** Name resolution for receivers' hosts (the system resolver by default; tests play DNS with it). */
  resolve?: Resolver
}

export type AttemptObserver = (outcome: SendOutcome, queuedAt: Date) => void

// Rows one claim takes at most, and how long a woken worker lets finished sends gather before claiming their
// room again: one claim then refills many slots instead of one per finished send.
const MAX_CLAIM = 500
const CLAIM_GATHER_MS = 2
// Finished attempts are recorded together: at this many, or this long after the first of a batch.
const RECORD_BATCH = 250
const RECORD_DELAY_MS = 5
// A claim lasts this much longer than the longest send, for the send's outcome to be recorded (which ends the
// claim) before it could lapse; a send's deadline never reaches into it.
const RECORDING_MARGIN_MS = 5000
// A recording that collides with another worker's (deadlock, serialization) is tried again this often.
const RECORD_TRIES = 3
// Timers and the database's clock may disagree by a millisecond: wake a little after a retry's due time.
const DUE_MARGIN_MS = 5
// A claim that failed (database restarting, pool exhausted) is tried again this soon, not at the next poll.
const CLAIM_RETRY_MS = 500
// How long after a due time the worker looks for it once more.
const SECOND_LOOK_MS = 1000
// An attempt that says nothing about the endpoint (not sent).
const NO_SIGNAL: EndpointSignal = { succeeded: false, congested: false, retryAfterSeconds: undefined }
const retryableRecordError = (error: unknown) => ['40P01', '40001'].includes((error as { code?: string } | null)?.code ?? '')

/**
 * The delivery loop: claims due deliveries in batches (SKIP LOCKED, endpoints in turn, each up to its free
 * capacity, each organization up to half the worker's slots, with a claim that lapses if the worker dies), sends
 * them concurrently over kept-alive connection pools per origin, each under a deadline that ends before its
 * claim could lapse, and records finished attempts in batches (one transaction each). Per-endpoint
 * concurrency adapts to the receiver (endpoint-limits.ts). Written here rather than on a job-queue library
 * because the deliveries table is both the queue and the record users read, and the per-endpoint capacity,
 * fairness and event status rules are ours. Wakes on NOTIFY (through the process's one listener) and when
 * sends finish; polls as a fallback (retries coming due are found that way).
 */
export class DeliveryWorker {
  private readonly inFlight = new Set<Promise<void>>()
  private readonly limits: EndpointLimits
  private readonly organizations: OrganizationSlots
  private readonly sender: WebhookSender
  private readonly stopping = new AbortController()
  private readonly unsent: string[] = []
  private outcomes: AttemptOutcome[] = []
  private recordTimer: NodeJS.Timeout | undefined
  private recording: Promise<void> | undefined
  private loop: Promise<void> | undefined
  private endSleep: (() => void) | undefined
  /** Set by a wake-up that came while not sleeping, so the next sleep is skipped and nothing is missed. */
  private woken = false
  /**
   * When work this worker knows of comes due before its next poll: retries it scheduled, claims it could not
   * record lapsing. It sleeps until the earliest rather than waiting for the poll.
   */
  private dueTimes: number[] = []

  constructor (private readonly options: DeliveryWorkerOptions) {
    // Every send in flight listens on the stop signal: hundreds at once are expected, not a leak.
    setMaxListeners(0, this.stopping.signal)
    this.limits = new EndpointLimits({ initial: options.endpointConcurrency, max: Math.max(options.endpointConcurrency, options.endpointMaxConcurrency) })
    this.organizations = new OrganizationSlots(organizationSlotLimit(options.workerConcurrency))
    // No cap on connections per origin: the worker's slots and the endpoints' windows bound them, and a cap would
    // queue a healthy endpoint's sends behind a stuck one's on a shared host.
    this.sender = createWebhookSender({
      timeoutMs: options.timeoutMs,
      allowPrivateUrls: options.allowPrivateUrls,
      ...(options.keepAliveTimeoutMs === undefined ? {} : { keepAliveTimeoutMs: options.keepAliveTimeoutMs }),
      ...(options.resolve === undefined ? {} : { resolve: options.resolve })
    })
    options.wakeUps.listen(DELIVERIES_CHANNEL, () => this.wake())
    // Wake-ups sent while the listener was down are lost: look for due deliveries once it is back.
    options.wakeUps.onConnect(() => this.wake())
  }

  start (): void {
    this.loop ??= this.run()
  }

  /** Stops claiming, aborts sends in flight and gives their claims back, records what finished, closes connections. */
  async stop (): Promise<void> {
    this.stopping.abort()
    this.wake()
    await this.loop
    await Promise.all(this.inFlight)
    await this.flushOutcomes()
    await releaseClaims(this.options.pool, this.unsent.splice(0))
      .catch((error: unknown) => this.options.log.warn({ err: error }, 'could not give claims back; they lapse by themselves'))
    await this.sender.close()
  }

  /** The adaptive concurrency of one endpoint in this worker (for tests and stats). */
  endpointWindow (webhookId: string): number {
    return this.limits.windowOf(webhookId)
  }

  /** Sends in flight for one organization's endpoints in this worker (for tests and stats). */
  organizationInFlight (organizationId: string): number {
    return this.organizations.inFlightOf(organizationId)
  }

  private async run (): Promise<void> {
    while (!this.stopping.signal.aborted) {
      let full = false
      try {
        full = await this.claimAndDispatch()
      } catch (error) {
        this.options.log.warn({ err: error }, 'claiming deliveries failed; retrying')
        this.dueAt(Date.now() + CLAIM_RETRY_MS)
      }
      if (full) await this.pause(CLAIM_GATHER_MS)
      else if (await this.sleep(this.sleepMs())) await this.pause(CLAIM_GATHER_MS)
    }
  }

  /** Until the poll, or until work this worker knows of comes due, whichever is sooner. */
  private sleepMs (): number {
    const now = Date.now()
    // Times passed were claimed just now (or, if not yet recorded then, the recording wakes the worker).
    this.dueTimes = this.dueTimes.filter((time) => time > now)
    return Math.max(1, Math.min(this.options.pollIntervalMs, ...this.dueTimes.map((time) => time + DUE_MARGIN_MS - now)))
  }

  /**
   * Remembers a due time that comes before the next poll (later ones the poll finds), and a second look
   * SECOND_LOOK_MS after it: the look at the due time can miss its delivery (its row locked by a recording still
   * in flight, which the claim skips; its endpoint's window full then), and with a long poll interval nothing
   * else would look again soon.
   */
  private dueAt (time: number): void {
    for (const look of [time, time + SECOND_LOOK_MS]) {
      if (look - Date.now() < this.options.pollIntervalMs) this.dueTimes.push(look)
    }
  }

  /** Claims what the worker and its endpoints have room for and starts sending; true when it filled that room. */
  private async claimAndDispatch (): Promise<boolean> {
    const room = Math.min(MAX_CLAIM, this.options.workerConcurrency - this.inFlight.size)
    if (room <= 0) return false
    const claimSeconds = this.claimSeconds()
    // The database starts the claims after this moment, so they hold at least until it + claimSeconds; measured
    // on this process's monotonic clock, the sends' deadlines do not depend on the two clocks agreeing.
    const claimStarted = performance.now()
    const claimed = await claimDeliveries(this.options.pool, {
      limit: room,
      claimSeconds,
      capacities: this.limits.capacities(),
      defaultCapacity: this.options.endpointConcurrency,
      organizationCapacities: this.organizations.capacities(),
      defaultOrganizationCapacity: this.organizations.limit
    })
    for (const delivery of claimed) this.dispatch(delivery, claimStarted + claimSeconds * 1000)
    return claimed.length === room
  }

  private dispatch (delivery: ClaimedDelivery, claimEnds: number): void {
    this.limits.started(delivery.webhook_id)
    this.organizations.started(delivery.organization_id)
    const task = this.deliver(delivery, claimEnds).catch((error: unknown): EndpointSignal => {
      // Unsent and unrecorded: the claim lapses and the delivery is tried again then.
      this.options.log.warn({ err: error, delivery_id: delivery.id }, 'delivering failed before sending')
      this.dueAt(this.claimLapses(claimEnds))
      return NO_SIGNAL
    }).then((signal) => {
      this.inFlight.delete(task)
      this.limits.finished(delivery.webhook_id, signal)
      this.organizations.finished(delivery.organization_id)
      this.wake()
    })
    this.inFlight.add(task)
  }

  /**
   * Sends one claimed delivery and hands its outcome to the recording. The send's deadline ends before the claim
   * can lapse (with RECORDING_MARGIN_MS to record it), so no other worker can claim and send the delivery while
   * this send is under way. A delivery deleted meanwhile (its webhook or organization deleted) has no row left:
   * the recording drops its outcome and nothing retries it.
   */
  private async deliver (delivery: ClaimedDelivery, claimEnds: number): Promise<EndpointSignal> {
    const limitMs = claimEnds - RECORDING_MARGIN_MS - performance.now()
    if (limitMs <= 0) {
      // Only a stalled process gets here (a claim lasts the timeout + the margin): the claim lapses unsent.
      this.options.log.warn({ delivery_id: delivery.id }, 'claim too close to lapsing to send; it is claimed again later')
      this.dueAt(this.claimLapses(claimEnds))
      return NO_SIGNAL
    }
    const request = signWebhook(delivery.event_id, delivery.type, delivery.payload_json, activeSecrets(delivery, this.options.secrets))
    const attemptedAt = new Date()
    const outcome = await this.sender.send(delivery.url, request, this.stopping.signal, limitMs)
    if (this.stopping.signal.aborted && !outcome.succeeded) {
      this.unsent.push(delivery.id)
      return NO_SIGNAL
    }
    this.options.onAttempt?.(outcome, delivery.queued_at)
    const attempt = delivery.attempts + 1
    const delayMs = outcome.succeeded ? null : nextRetryDelayMs(this.options.schedule, attempt, outcome.retryAfterSeconds)
    if (delayMs !== null) this.dueAt(Date.now() + delayMs)
    this.addOutcome({
      delivery_id: delivery.id,
      event_id: delivery.event_id,
      event_created_at: delivery.event_created_at,
      attempt,
      succeeded: outcome.succeeded,
      response_status: outcome.responseStatus,
      error: outcome.error,
      duration_ms: outcome.durationMs,
      attempted_at: attemptedAt,
      next_attempt_at: delayMs === null ? null : new Date(Date.now() + delayMs)
    })
    return outcome
  }

  private addOutcome (outcome: AttemptOutcome): void {
    this.outcomes.push(outcome)
    if (this.outcomes.length >= RECORD_BATCH) void this.flushOutcomes()
    else this.recordTimer ??= setTimeout(() => { void this.flushOutcomes() }, RECORD_DELAY_MS)
  }

  /** Records what has finished, one batch at a time; resolves when nothing is left to record. */
  private async flushOutcomes (): Promise<void> {
    clearTimeout(this.recordTimer)
    this.recordTimer = undefined
    while (this.recording) await this.recording
    if (this.outcomes.length === 0) return
    const batch = this.outcomes.splice(0, RECORD_BATCH)
    this.recording = this.record(batch).finally(() => { this.recording = undefined })
    await this.recording
    if (this.outcomes.length > 0) await this.flushOutcomes()
  }

  private async record (batch: AttemptOutcome[]): Promise<void> {
    for (let tries = 1; ; tries++) {
      try {
        await inTransaction(this.options.pool, (client) => recordAttempts(client, batch, this.options.disableAfterFailures))
        // Retries due by now (a schedule entry of 0, or a claim that looked before this commit) are claimable now.
        if (batch.some((outcome) => outcome.next_attempt_at !== null && outcome.next_attempt_at.getTime() <= Date.now())) this.wake()
        return
      } catch (error) {
        if (tries < RECORD_TRIES && retryableRecordError(error)) continue
        // The claims lapse by themselves, so these deliveries are sent again (at least once) though unrecorded.
        this.options.log.warn({ err: error, attempts: batch.length }, 'recording delivery attempts failed')
        this.dueAt(Date.now() + this.claimSeconds() * 1000 + 100)
        // The worker may be asleep until its poll already: woken, it sleeps until the claims lapse instead.
        this.wake()
        return
      }
    }
  }

  /** A claim ending at `claimEnds` (monotonic clock) as a wall-clock due time. */
  private claimLapses (claimEnds: number): number {
    return Date.now() + Math.max(0, claimEnds - performance.now()) + DUE_MARGIN_MS
  }

  /**
   * A claim outlives the longest send (its deadline, WEBHOOK_TIMEOUT_MS, which aborts it) by RECORDING_MARGIN_MS,
   * so it never lapses while its send is in flight nor before the outcome is recorded.
   */
  private claimSeconds (): number {
    return Math.max(this.options.claimSeconds, Math.ceil((this.options.timeoutMs + RECORDING_MARGIN_MS) / 1000))
  }

  private wake (): void {
    this.woken = true
    this.endSleep?.()
  }

  /** Sleeps up to `ms` or until woken; true when woken. */
  private async sleep (ms: number): Promise<boolean> {
    if (this.woken || this.stopping.signal.aborted) {
      this.woken = false
      return true
    }
    const woken = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => done(false), ms)
      const done = (byWake: boolean) => {
        clearTimeout(timer)
        resolve(byWake)
      }
      this.endSleep = () => done(true)
    })
    this.endSleep = undefined
    this.woken = false
    return woken
  }

  /** A short wait that wake-ups do not cut short (finished sends gather meanwhile). */
  private async pause (ms: number): Promise<void> {
    if (this.stopping.signal.aborted) return
    await new Promise((resolve) => setTimeout(resolve, ms))
    this.woken = false
  }
}

/** A worker configured from the service settings (used by the API process and by worker.ts). */
export function createDeliveryWorker (config: Config, resources: Pick<DeliveryWorkerOptions, 'pool' | 'wakeUps' | 'secrets' | 'log' | 'onAttempt'>): DeliveryWorker {
  return new DeliveryWorker({
    ...resources,
    schedule: parseRetrySchedule(config.WEBHOOK_RETRY_SCHEDULE),
    timeoutMs: config.WEBHOOK_TIMEOUT_MS,
    allowPrivateUrls: config.WEBHOOK_ALLOW_PRIVATE_URLS,
    disableAfterFailures: config.WEBHOOK_DISABLE_AFTER_FAILURES,
    endpointConcurrency: config.WEBHOOK_ENDPOINT_CONCURRENCY,
    endpointMaxConcurrency: config.WEBHOOK_ENDPOINT_MAX_CONCURRENCY,
    workerConcurrency: config.WEBHOOK_WORKER_CONCURRENCY,
    claimSeconds: config.WEBHOOK_CLAIM_SECONDS,
    pollIntervalMs: config.WEBHOOK_POLL_INTERVAL_MS
  })
}
