import type { Pool } from 'pg'
import { DELIVERIES_CHANNEL, claimDeliveries, recordAttempt, releaseClaims, type ClaimedDelivery } from '../../db/deliveries.js'
import { inTransaction } from '../../db/transaction.js'
import type { Notifications } from '../listener.js'
import { nextRetryDelayMs, parseRetrySchedule, type RetrySchedule } from './retry-schedule.js'
import type { Config } from '../../plugins/config.js'
import { sendWebhook } from './send.js'
import { activeSecrets, signWebhook } from './signing.js'

export interface DeliveryWorkerOptions {
  pool: Pool
  /** The process's listener: a NOTIFY on the deliveries channel, or a reconnect, wakes the worker. */
  notifications: Notifications
  log: { info: (message: string) => void, warn: (details: object, message: string) => void }
  schedule: RetrySchedule
  timeoutMs: number
  allowPrivateUrls: boolean
  disableAfterFailures: number
  endpointConcurrency: number
  workerConcurrency: number
  claimSeconds: number
  pollIntervalMs: number
}

const CLAIM_BATCH = 50

/**
 * The delivery loop: claims due deliveries (SKIP LOCKED + a lapsing claim), sends them with bounded
 * concurrency overall and per endpoint, records each attempt and schedules retries. Written here rather than
 * on a job-queue library because the deliveries table is both the queue and the record users read, and the
 * per-endpoint bound and event status rules are ours. Wakes on NOTIFY (through the process's one listener),
 * polls as a fallback.
 */
export class DeliveryWorker {
  private readonly inFlight = new Map<string, Promise<void>>()
  private readonly perWebhook = new Map<string, number>()
  private readonly stopping = new AbortController()
  private loop: Promise<void> | undefined
  private endSleep: (() => void) | undefined
  /** Set by a wake-up that came while not sleeping, so the next sleep is skipped and nothing is missed. */
  private woken = false

  constructor (private readonly options: DeliveryWorkerOptions) {
    options.notifications.listen(DELIVERIES_CHANNEL, () => this.wake())
    // Wake-ups sent while the listener was down are lost: look for due deliveries once it is back.
    options.notifications.onConnect(() => this.wake())
  }

  start (): void {
    this.loop ??= this.run()
  }

  /** Stops claiming, aborts sends in flight and gives their claims back. */
  async stop (): Promise<void> {
    this.stopping.abort()
    this.wake()
    await this.loop
    await Promise.all(this.inFlight.values())
  }

  private async run (): Promise<void> {
    while (!this.stopping.signal.aborted) {
      let claimedFull = false
      try {
        claimedFull = await this.claimAndDispatch()
      } catch (error) {
        this.options.log.warn({ err: error }, 'claiming deliveries failed; retrying')
      }
      if (!claimedFull) await this.sleep(this.options.pollIntervalMs)
    }
  }

  /** Returns true when it claimed a full batch (more work is probably waiting). */
  private async claimAndDispatch (): Promise<boolean> {
    const capacity = Math.min(CLAIM_BATCH, this.options.workerConcurrency - this.inFlight.size)
    if (capacity <= 0) return false
    const busy = [...this.perWebhook].filter(([, count]) => count >= this.options.endpointConcurrency).map(([id]) => id)
    const claimSeconds = Math.max(this.options.claimSeconds, Math.ceil(this.options.timeoutMs / 1000) + 5)
    const claimed = await claimDeliveries(this.options.pool, capacity, claimSeconds, busy)
    const overLimit: string[] = []
    for (const delivery of claimed) {
      const running = this.perWebhook.get(delivery.webhook_id) ?? 0
      if (running >= this.options.endpointConcurrency || this.stopping.signal.aborted) {
        overLimit.push(delivery.id)
        continue
      }
      this.perWebhook.set(delivery.webhook_id, running + 1)
      const task = this.deliver(delivery).finally(() => {
        this.inFlight.delete(delivery.id)
        const left = (this.perWebhook.get(delivery.webhook_id) ?? 1) - 1
        if (left > 0) this.perWebhook.set(delivery.webhook_id, left)
        else this.perWebhook.delete(delivery.webhook_id)
        this.wake()
      })
      this.inFlight.set(delivery.id, task)
    }
    await releaseClaims(this.options.pool, overLimit)
    return claimed.length === capacity && overLimit.length === 0
  }

  private async deliver (delivery: ClaimedDelivery): Promise<void> {
    const { options } = this
    try {
      const request = signWebhook(delivery.event_id, delivery.type, delivery.payload, activeSecrets(delivery))
      const outcome = await sendWebhook(delivery.url, request, {
        timeoutMs: options.timeoutMs, allowPrivateUrls: options.allowPrivateUrls, signal: this.stopping.signal
      })
      if (this.stopping.signal.aborted && !outcome.succeeded) {
        await releaseClaims(options.pool, [delivery.id])
        return
      }
      const attempt = delivery.attempts + 1
      const delayMs = outcome.succeeded ? null : nextRetryDelayMs(options.schedule, attempt, outcome.retryAfterSeconds)
      await inTransaction(options.pool, (client) => recordAttempt(client, {
        deliveryId: delivery.id,
        webhookId: delivery.webhook_id,
        eventId: delivery.event_id,
        attempt,
        succeeded: outcome.succeeded,
        responseStatus: outcome.responseStatus,
        error: outcome.error,
        durationMs: outcome.durationMs,
        nextAttemptAt: delayMs === null ? null : new Date(Date.now() + delayMs),
        disableAfterFailures: options.disableAfterFailures
      }))
    } catch (error) {
      // The claim lapses by itself, so the delivery is retried even though this attempt went unrecorded.
      options.log.warn({ err: error, delivery_id: delivery.id }, 'recording a delivery attempt failed')
    }
  }

  private wake (): void {
    this.woken = true
    this.endSleep?.()
  }

  private async sleep (ms: number): Promise<void> {
    if (this.woken || this.stopping.signal.aborted) {
      this.woken = false
      return
    }
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms)
      function done () {
        clearTimeout(timer)
        resolve()
      }
      this.endSleep = done
    })
    this.endSleep = undefined
    this.woken = false
  }
}

/** A worker configured from the service settings (used by the API process and by worker.ts). */
export function createDeliveryWorker (config: Config, pool: Pool, notifications: Notifications, log: DeliveryWorkerOptions['log']): DeliveryWorker {
  return new DeliveryWorker({
    pool,
    notifications,
    log,
    schedule: parseRetrySchedule(config.WEBHOOK_RETRY_SCHEDULE),
    timeoutMs: config.WEBHOOK_TIMEOUT_MS,
    allowPrivateUrls: config.WEBHOOK_ALLOW_PRIVATE_URLS,
    disableAfterFailures: config.WEBHOOK_DISABLE_AFTER_FAILURES,
    endpointConcurrency: config.WEBHOOK_ENDPOINT_CONCURRENCY,
    workerConcurrency: config.WEBHOOK_WORKER_CONCURRENCY,
    claimSeconds: config.WEBHOOK_CLAIM_SECONDS,
    pollIntervalMs: config.WEBHOOK_POLL_INTERVAL_MS
  })
}
