import { setTimeout as sleep } from 'node:timers/promises'
import { rateLimitRemaining } from './api.js'
import { seconds } from './checks.js'
import { startWorker } from './cluster.js'
import { deliveriesOfEvents, endpointSummary } from './database.js'
import { instances, recoverApi, type Context, type FaultyEndpoint, type PhaseResult, type PhaseSpec } from './phase.js'
import { readUntil, waitUntil } from './wait.js'
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
/** A timely worker ends the faulty deliveries in about 3 timeouts + the schedule (~9 s); twice that and more. */
const SETTLE_TIMEOUT_MS = 20_000
/** Jitter (10 %) and the claim loop's own pace; anything later waited for a poll or a stray notification. */
const MAX_RETRY_LATE_SECONDS = 2

/** (1) kill -9 of instance A under load; restarted at once, as a process manager would. */
export const killApi: PhaseSpec = {
  id: 'kill-api',
  name: 'kill -9 API instance',
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
    const settled = await waitUntil(async () => (await deliveriesOfEvents(result.hookedAcked)).pending === 0, SETTLE_TIMEOUT_MS, 500)
    if (!settled) result.notes.push(`deliveries of this phase still pending ${SETTLE_TIMEOUT_MS / 1000} s after the load stopped`)
    const lateness: Array<[string, number]> = []
    for (const endpoint of context.faulty) lateness.push([endpoint.receiver.behaviour, await checkFaultyEndpoint(context, this.name, endpoint, result)])
    const latest = Math.max(...lateness.map(([, late]) => late))
    context.checks.add(this.name, `${this.name}: retries sent on schedule (${RETRY_SCHEDULE.join(',')} s, at most ${MAX_RETRY_LATE_SECONDS} s late)`,
      latest <= MAX_RETRY_LATE_SECONDS, `latest retry after it came due: ${lateness.map(([behaviour, late]) => `${behaviour} ${seconds(late)} s`).join(', ')}`)
  }
}

/** Every delivery to a faulty endpoint ends `failed` once the schedule is used up; returns its retries' lateness (s). */
async function checkFaultyEndpoint (context: Context, phase: string, { receiver, webhookId }: FaultyEndpoint, result: PhaseResult): Promise<number> {
  const summary = await endpointSummary(webhookId)
  const allFailed = summary.failed > 0 && summary.pending === 0 && summary.delivered === 0
  const exhausted = summary.minAttempts === RETRY_SCHEDULE.length && summary.maxAttempts === RETRY_SCHEDULE.length
  result.notes.push(`${receiver.behaviour} receiver: ${summary.outcomes.join('; ')}`)
  context.checks.add(phase, `${phase}: ${receiver.behaviour} endpoint's deliveries end failed after ${RETRY_SCHEDULE.length} attempts`, allFailed && exhausted,
    `${summary.failed} failed, ${summary.pending} pending, ${summary.delivered} delivered; attempts ${summary.minAttempts}–${summary.maxAttempts}; ` +
    `${receiver.requests} requests reached the receiver`)
  return summary.retryLateSeconds
}

/** The five faults, in the order of the issue; runPhase runs each under load. */
export const PHASES: PhaseSpec[] = [killApi, restartDatabase, restartRedis, killWorker, faultyReceivers]
