import { randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { leaseWaiting, sendEvent } from './api.js'
import { errorMessage, seconds } from './checks.js'
import { claimedDeliveries, deliveriesOfOrganization, nextScheduledAttempt } from './database.js'
import { instances, type Context, type PhaseResult } from './phase.js'
import type { ManagedProcess } from './processes.js'
import { waitUntil } from './wait.js'
import { POLL_INTERVAL_MS, RUN_ID, TYPES } from './settings.js'

/**
 * Wake-ups after the database restart. Both must come by LISTEN/NOTIFY over connections that had to be
 * re-established. Each is judged by what else could have ended the wait, not by how fast it was (the time
 * is reported): a long poll only looks again when an arrival is announced or its own deadline comes, and an
 * idle worker only when notified or when its poll (every POLL_INTERVAL_MS) comes.
 */
const LONG_POLL_WAIT_SECONDS = 20
const IDLE_TIMEOUT_MS = 30_000

/** A long poll on B must be woken by an event sent to A (LISTEN/NOTIFY across instances). */
export async function checkLongPollWakeUp (context: Context, phase: string, result: PhaseResult): Promise<void> {
  const [a, b] = instances(context)
  // The server's deadline counts from when the request reached it, so it falls no earlier than this plus the wait.
  const deadlineNotBefore = Date.now() + LONG_POLL_WAIT_SECONDS * 1000
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
  // With the event, after it was sent, before its deadline: only the announcement of its arrival ends a wait early.
  const beforeDeadline = answer.at < deadlineNotBefore
  context.checks.add(phase, `${phase}: long poll on B woken by an event sent to A (answered with it before its own deadline)`,
    answer.leased === 1 && answer.at >= sentAt && beforeDeadline,
    `${answer.leased} event ${seconds(took, 2)} s after it was sent, ` +
    `${beforeDeadline ? `${seconds((deadlineNotBefore - answer.at) / 1000, 2)} s before` : 'not before'} the ${LONG_POLL_WAIT_SECONDS} s deadline` +
    restartedMeanwhile([a.process, b.process], result))
}

/**
 * An idle worker (no send in flight, nothing claimed: no send can finish and no claim lapse to wake it) looks
 * for due deliveries only when notified, when a retry it scheduled comes due, or when its poll comes. It
 * looked once more after its last send finished, so that poll comes no earlier than POLL_INTERVAL_MS after
 * the receiver's last request: a delivery received before then and before any scheduled retry was found
 * because of the notification. How long it took is reported, not judged. Due deliveries left unclaimed
 * meanwhile are themselves a sign that it sleeps.
 */
export async function checkWebhookWakeUp (context: Context, phase: string, result: PhaseResult): Promise<void> {
  const name = `${phase}: worker woken by notification for a new delivery (received before its poll could have come)`
  const idle = await waitUntil(async () => context.healthy.inFlight === 0 && await claimedDeliveries(context.organization.id) === 0, IDLE_TIMEOUT_MS, 500)
  await sleep(1000)
  const waiting = (await deliveriesOfOrganization(context.organization.id)).pending
  if (waiting > 0) result.notes.push(`${waiting} deliveries were pending but unclaimed with the worker asleep before the webhook wake-up`)
  const lastActive = context.healthy.lastArrivalAt
  if (!idle || lastActive === undefined) {
    result.wakeUp.push('webhook —')
    context.checks.add(phase, name, false, !idle
      ? `the worker still held deliveries ${IDLE_TIMEOUT_MS / 1000} s after the load stopped: a finishing send could wake it, so a notification cannot be told apart`
      : 'the worker never sent to the healthy receiver: when its poll comes is unknown')
    return
  }
  const retryAt = (await nextScheduledAttempt(context.organization.id))?.getTime() ?? Number.POSITIVE_INFINITY
  const pollNotBefore = Math.min(lastActive + POLL_INTERVAL_MS, retryAt)
  const [a] = instances(context)
  const sentAt = Date.now()
  const eventId = await sendEvent(a.baseUrl, context.organization, TYPES.wakeUp, `${RUN_ID}-webhook-wake-up-${randomUUID()}`)
  result.acked.push(eventId)
  result.hookedAcked.push(eventId)
  result.organizationAcked.push(eventId)
  // Waited for only while a receipt can still be told apart from the poll's.
  const waitFrom = Date.now()
  const waitedMs = await context.healthy.waitFor(eventId, Math.max(0, pollNotBefore - waitFrom))
  // 0 when it came before the wait began: then waitFrom is a bound from above, which is all the check needs.
  const receivedAt = waitedMs === undefined ? undefined : waitFrom + waitedMs
  const took = receivedAt === undefined ? undefined : (receivedAt - sentAt) / 1000
  result.wakeUp.push(`webhook ${took === undefined ? '—' : seconds(took, 2)}`)
  context.checks.add(phase, name, receivedAt !== undefined && receivedAt < pollNotBefore,
    (receivedAt === undefined
      ? `not received before ${seconds((pollNotBefore - sentAt) / 1000)} s after it was sent, when the worker's ${retryAt === pollNotBefore ? 'scheduled retry' : `${POLL_INTERVAL_MS / 1000} s poll`} could wake it: no notification reached it`
      : `received ${seconds(took, 2)} s after it was sent, ${seconds((pollNotBefore - receivedAt) / 1000, 1)} s before the worker's ${retryAt === pollNotBefore ? 'scheduled retry' : 'poll'} could have woken it`) +
    restartedMeanwhile([context.cluster.worker.process, a.process], result))
}

/** A wake-up seen by a process restarted after a crash shows its fresh connection, not a reconnection. */
function restartedMeanwhile (processes: ManagedProcess[], result: PhaseResult): string {
  const crashed = processes.filter((managed) => managed.crashesSince(result.startedAt).length > 0).map((managed) => managed.name)
  return crashed.length === 0 ? '' : ` (${crashed.join(' and ')} crashed and restarted: this shows a fresh connection, not a reconnection)`
}
