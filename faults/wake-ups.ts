import { randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { leaseWaiting, sendEvent } from './api.js'
import { errorMessage, seconds } from './checks.js'
import { claimedDeliveries, deliveriesOfOrganization } from './database.js'
import { instances, type Context, type PhaseResult } from './phase.js'
import type { ManagedProcess } from './processes.js'
import { waitUntil } from './wait.js'
import { RUN_ID, TYPES } from './settings.js'

/**
 * Wake-ups after the database restart. Both must come by LISTEN/NOTIFY over connections that had to be
 * re-established: the long poll's deadline is 20 s and the worker polls every 60 s, so an answer within
 * WAKE_UP_LIMIT_SECONDS can only be a notification.
 */
const LONG_POLL_WAIT_SECONDS = 20
const WAKE_UP_LIMIT_SECONDS = 5
const RECEIVE_TIMEOUT_MS = 15_000
const IDLE_TIMEOUT_MS = 30_000

/** A long poll on B must be woken by an event sent to A (LISTEN/NOTIFY across instances). */
export async function checkLongPollWakeUp (context: Context, phase: string, result: PhaseResult): Promise<void> {
  const [a, b] = instances(context)
  // Settled at once (never left rejected while we wait), with the moment it answered.
  const poll = leaseWaiting(b.baseUrl, context.pollOrganization, LONG_POLL_WAIT_SECONDS)
    .then((leased) => ({ leased, at: Date.now() }), (error: unknown) => ({ error: errorMessage(error), at: Date.now() }))
  // Lets the lease call start waiting; an event sent before it would be found without any wake-up.
  await sleep(1000)
  const sentAt = Date.now()
  const eventId = await sendEvent(a.baseUrl, context.pollOrganization, 'faults.poll', `${RUN_ID}-poll`)
  result.acked.push(eventId)
  const answer = await poll
  if ('error' in answer) throw new Error(`the long poll failed: ${answer.error}`)
  const took = (answer.at - sentAt) / 1000
  result.wakeUp.push(`long poll ${seconds(took, 2)}`)
  context.checks.add(phase, `${phase}: long poll on B woken by an event sent to A`, answer.leased === 1 && took >= 0 && took < WAKE_UP_LIMIT_SECONDS,
    `${answer.leased} event ${seconds(took, 2)} s after it was sent (deadline ${LONG_POLL_WAIT_SECONDS} s)${restartedMeanwhile([a.process, b.process], result)}`)
}

/**
 * With polling at 60 s, a delivery that reaches the receiver within seconds was woken by a notification.
 * Only meaningful once the worker is idle (nothing claimed, asleep in its poll), so the load's sends finish
 * first; due deliveries left unclaimed meanwhile are themselves a sign that it sleeps.
 */
export async function checkWebhookWakeUp (context: Context, phase: string, result: PhaseResult): Promise<void> {
  const idle = await waitUntil(async () => context.healthy.inFlight === 0 && await claimedDeliveries(context.organization.id) === 0, IDLE_TIMEOUT_MS, 500)
  if (!idle) result.notes.push('the worker still held deliveries 30 s after the load stopped (webhook wake-up measured anyway)')
  await sleep(1000)
  const waiting = (await deliveriesOfOrganization(context.organization.id)).pending
  if (waiting > 0) result.notes.push(`${waiting} deliveries were pending but unclaimed with the worker asleep before the webhook wake-up`)
  const [a] = instances(context)
  const eventId = await sendEvent(a.baseUrl, context.organization, TYPES.wakeUp, `${RUN_ID}-webhook-wake-up-${randomUUID()}`)
  result.acked.push(eventId)
  result.hookedAcked.push(eventId)
  const waitedMs = await context.healthy.waitFor(eventId, RECEIVE_TIMEOUT_MS)
  result.wakeUp.push(`webhook ${waitedMs === undefined ? '> 15' : seconds(waitedMs / 1000, 2)}`)
  context.checks.add(phase, `${phase}: worker woken by notification for a new delivery`,
    waitedMs !== undefined && waitedMs / 1000 < WAKE_UP_LIMIT_SECONDS,
    (waitedMs === undefined ? 'not received within 15 s (the worker polls every 60 s: no notification reached it)' : `received after ${seconds(waitedMs / 1000, 2)} s`) +
    restartedMeanwhile([context.cluster.worker.process, a.process], result))
}

/** A wake-up seen by a process restarted after a crash shows its fresh connection, not a reconnection. */
function restartedMeanwhile (processes: ManagedProcess[], result: PhaseResult): string {
  const crashed = processes.filter((managed) => managed.crashesSince(result.startedAt).length > 0).map((managed) => managed.name)
  return crashed.length === 0 ? '' : ` (${crashed.join(' and ')} crashed and restarted: this shows a fresh connection, not a reconnection)`
}
