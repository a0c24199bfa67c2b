import { setTimeout as sleep } from 'node:timers/promises'
import { rateLimitRemaining } from './api.js'
import { seconds } from './checks.js'
import { startWorker } from './cluster.js'
import { deliveriesOfEvents, endpointSummary, type RetryOrder } from './database.js'
import { instances, recoverApi, type Context, type FaultyEndpoint, type PhaseResult, type PhaseSpec } from './phase.js'
import { readUntil, waitUntil, waitWhileProgressing } from './wait.js'
import { restartPostgres, startRedis, stopRedis } from './services.js'
import { CLAIM_SECONDS, RETRY_SCHEDULE, TYPES } from './settings.js'
import { checkLongPollWakeUp, checkWebhookWakeUp } from './wake-ups.js'

const REDIS_DOWN_MS = 3000
/** Slow enough that several sends are open when the worker is killed. */
const SLOW_RECEIVER_MS = 300
const MIN_SENDS_IN_FLIGHT = 5
/**
 * Events per faulty endpoint. Each failed round halves an endpoint's concurrency (32 -> 16 -> 8 over the three
 * attempts), by design, so a hanging receiver holds few connections; with at most 8 events every retry still
 * finds a free slot, and lateness measures the worker's timing rather than that throttle.
 */
const FAULTY_EVENTS = 8
/**
 * The faulty deliveries are waited for as long as attempts keep being recorded: a busy machine makes them
 * slow, not wrong. Stuck means no new attempt for this long (several timeouts, delays and a lapsed claim).
 */
const SETTLE_STALL_MS = 30_000
const SETTLE_MAX_MS = 300_000

/** (1) kill -9 of instance A under load; restarted at once, as a process manager would. */
export const killApi: PhaseSpec = {
  id: 'kill-api',
  name: 'kill -9 API instance',
  duringSubscriptionReads: true,
  async during (context, _load, result) {
    const [api] = instances(context)
    const killedAt = Date.now()
    await api.process.kill9()
    result.killed.push(api.label)
    api.process.start()
    const ready = await recoverApi(context, this.name, api, killedAt)
    result.recovery.push(`${api.label} ${seconds(ready)}`)
  }
}

/** (2) PostgreSQL restart under load; then wake-ups that only a notification can explain. */
export const restartDatabase: PhaseSpec = {
  id: 'restart-pg',
  name: 'PostgreSQL restart',
  outage: 'PostgreSQL restarts',
  duringSubscriptionReads: true,
  async during (context, _load, result) {
    const started = Date.now()
    await restartPostgres()
    result.notes.push(`PostgreSQL accepted connections again ${seconds((Date.now() - started) / 1000)} s after the restart began`)
    const ready = await Promise.all(context.cluster.apis.map((api) => recoverApi(context, this.name, api, started)))
    context.cluster.apis.forEach((api, index) => result.recovery.push(`${api.label} ${seconds(ready[index])}`))
  },
  async after (context, result) {
    await checkLongPollWakeUp(context, this.name, result)
    await checkWebhookWakeUp(context, this.name, result)
  }
}

/** (3) Redis restart under load: ingest goes on without rate limiting, then counts in Redis again. */
export const restartRedis: PhaseSpec = {
  id: 'restart-redis',
  name: 'Redis restart',
  async during (context, load, result) {
    const before = load.ackedCount
    const started = Date.now()
    await stopRedis()
    await sleep(REDIS_DOWN_MS)
    const whileDown = load.ackedCount - before
    await startRedis()
    result.notes.push(`Redis down for ${seconds((Date.now() - started) / 1000)} s; ${whileDown} events acknowledged meanwhile`)
    context.checks.add(this.name, `${this.name}: ingest answered 2xx while Redis was down`, whileDown > 0, `${whileDown} events acknowledged`)
  },
  async after (context) {
    const [a, b] = instances(context)
    // Both instances count into the one Redis budget again: alternating calls see it go down one by one.
    const readBudget = async () => {
      const observed: Array<number | undefined> = []
      for (const api of [a, b, a]) observed.push(await rateLimitRemaining(api.baseUrl, context.organization))
      return observed
    }
    const { ok, last } = await readUntil(readBudget, ([first, second, third]) => first !== undefined && second === first - 1 && third === first - 2, 15_000, 500)
    context.checks.add(this.name, `${this.name}: both instances count in Redis again`, ok, `x-ratelimit-remaining on A, B, A: ${last.join(', ')}`)
  }
}

/** (4) kill -9 of the worker while sends are in flight (the healthy receiver answers slowly meanwhile). */
export const killWorker: PhaseSpec = {
  id: 'kill-worker',
  name: 'kill -9 worker mid-send',
  duringSubscriptionReads: true,
  async during (context, _load, result) {
    const { healthy, cluster: { worker } } = context
    healthy.delayMs = SLOW_RECEIVER_MS
    try {
      await waitUntil(() => healthy.inFlight >= MIN_SENDS_IN_FLIGHT, 10_000)
      const inFlight = healthy.inFlight
      await worker.process.kill9()
      context.checks.add(this.name, `${this.name}: sends were in flight at the kill`, inFlight > 0, `${inFlight} requests open at the receiver`)
      const running = await startWorker(worker)
      result.recovery.push(`worker ${seconds(running)}`)
      // The killed worker's claims lapse after CLAIM_SECONDS; the load keeps waking the new worker to take them.
      await sleep(CLAIM_SECONDS * 1000 + 2000)
    } finally {
      healthy.delayMs = 0
    }
  }
}

/** (5) Receivers that answer 500, hang past the timeout, or reset: their deliveries end `failed`. */
export const faultyReceivers: PhaseSpec = {
  id: 'receivers',
  name: 'receivers: 500, hang, reset',
  hookedType: TYPES.faulty,
  maxHooked: FAULTY_EVENTS,
  async during (_context, load) {
    await waitUntil(() => load.hookedCount >= FAULTY_EVENTS, 10_000)
  },
  async after (context, result) {
    const started = Date.now()
    const { ok: settled, stalled } = await waitWhileProgressing(() => deliveriesOfEvents(result.hookedAcked), (tally) => tally.pending === 0,
      (tally) => tally.attempts, SETTLE_STALL_MS, SETTLE_MAX_MS, 500)
    result.notes.push(settled
      ? `the faulty deliveries ended ${seconds((Date.now() - started) / 1000)} s after the load stopped`
      : `deliveries of this phase still pending ${seconds((Date.now() - started) / 1000)} s after the load stopped (${stalled ? `no attempt for ${SETTLE_STALL_MS / 1000} s` : 'still progressing'})`)
    for (const endpoint of context.faulty) await checkFaultyEndpoint(context, this.name, endpoint, result)
  }
}

/**
 * Every delivery to a faulty endpoint ends `failed` once the schedule is used up; its attempts came in order,
 * each retry after the previous attempt ended and not before the schedule's delay; the receiver saw each
 * attempt exactly once (none lost between worker and receiver, none sent twice). How late the retries were
 * after they came due is reported, not judged: on a shared machine it measures the machine as much as the worker.
 */
async function checkFaultyEndpoint (context: Context, phase: string, { receiver, webhookId }: FaultyEndpoint, result: PhaseResult): Promise<void> {
  const summary = await endpointSummary(webhookId)
  const { behaviour } = receiver
  const allFailed = summary.failed > 0 && summary.pending === 0 && summary.delivered === 0
  const exhausted = summary.minAttempts === RETRY_SCHEDULE.length && summary.maxAttempts === RETRY_SCHEDULE.length
  result.notes.push(`${behaviour} receiver: ${summary.outcomes.join('; ')}`)
  result.notes.push(`${behaviour} receiver: ${describeLateness(summary.retries)}`)
  context.checks.add(phase, `${phase}: ${behaviour} endpoint's deliveries end failed after ${RETRY_SCHEDULE.length} attempts`, allFailed && exhausted,
    `${summary.failed} failed, ${summary.pending} pending, ${summary.delivered} delivered; attempts ${summary.minAttempts}–${summary.maxAttempts}; ` +
    `${receiver.requests} requests reached the receiver`)
  const { outOfSequence, overlapping, early, retries } = summary.retries
  context.checks.add(phase, `${phase}: ${behaviour} endpoint's retries in order, each after the attempt before it ended and not before its delay (${RETRY_SCHEDULE.join(',')} s)`,
    retries > 0 && outOfSequence === 0 && overlapping === 0 && early === 0,
    `${retries} retries: ${outOfSequence} out of sequence, ${overlapping} before the previous attempt ended, ${early} before they were due`)
  const sends = compareSends(receiver.arrivals, summary.attemptedEventIds)
  context.checks.add(phase, `${phase}: ${behaviour} receiver saw every recorded attempt once (none lost, no duplicate sends)`,
    summary.attemptedEventIds.length > 0 && sends.lost === 0 && sends.extra === 0,
    `${summary.attemptedEventIds.length} attempts recorded, ${receiver.requests} requests received; ${sends.lost} recorded but not received, ${sends.extra} received beyond the recorded`)
}

/** Per event: recorded attempts the receiver never saw, and requests it got beyond them (or for events never attempted). */
function compareSends (arrivals: Map<string, number>, attemptedEventIds: string[]): { lost: number, extra: number } {
  const recorded = new Map<string, number>()
  for (const id of attemptedEventIds) recorded.set(id, (recorded.get(id) ?? 0) + 1)
  let lost = 0
  let extra = 0
  for (const id of new Set([...recorded.keys(), ...arrivals.keys()])) {
    const difference = (arrivals.get(id) ?? 0) - (recorded.get(id) ?? 0)
    if (difference < 0) lost -= difference
    else extra += difference
  }
  return { lost, extra }
}

function describeLateness ({ retries, latenessP50Seconds, latenessMaxSeconds }: RetryOrder): string {
  return `${retries} retries started after they came due by p50 ${seconds(latenessP50Seconds, 2)} s, max ${seconds(latenessMaxSeconds, 2)} s`
}

/** The five faults, in the order of the issue; runPhase runs each under load. */
export const PHASES: PhaseSpec[] = [killApi, restartDatabase, restartRedis, killWorker, faultyReceivers]
