import { fork, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { acceptedIdsOf, singleEvents, type HttpRun } from './http-load.js'
// Types only: bench/probe.ts is the child's entry point and runs as soon as it is loaded.
import type { ParentMessage, ProbeAnswer, ProbeMessage, ProbePlan } from './probe.js'
import { percentiles, type Percentiles } from './stats.js'

/**
 * The parent's side of the overload scenario's paced probe (bench/probe.ts): forks it, tells it when the flood
 * starts, and turns its answers into a summary, a report line and the probe's share of the row check.
 */

const PROBE_SCRIPT = fileURLToPath(new URL('./probe.js', import.meta.url))
// Kept-alive connections, as a client's pool: at the default 20 probes/s a quarter or so are answered 503 and their
// connection then waits out its Retry-After (1 s), so 4 ran out. Slower answers or longer waits make the probe open
// more (up to the maximum) rather than queue probes behind each other in the client.
const PROBE_CONNECTIONS = 16
const PROBE_MAX_CONNECTIONS = 64
// autocannon's time-out, so that a probe and the flood give up alike.
const PROBE_TIMEOUT_MS = 10_000

/** Where and how long to probe: the flood's server and organization, for the flood's `seconds`. */
export interface ProbeSetup {
  origin: string
  apiKey: string
  seconds: number
  ratePerSecond: number
}

/** What the paced probe saw beside the flood: the latency a client sending at a modest pace gets for what is accepted. */
export interface ProbeResult {
  ratePerSecond: number
  sent: number
  /** 201 answers, stored. */
  accepted: number
  /** 503 answers. */
  shed: number
  /** Other statuses, by status. */
  others: Record<number, number>
  /** Probes without an answer (socket error, or no answer within 10 s). */
  unanswered: number
  /** Send → last byte of the answer, of the 201s alone; undefined when none was accepted. */
  acceptedLatency: Percentiles | undefined
  /**
   * The same for the 201s sent on a kept-alive connection alone. A probe on a new one also waits for the handshake
   * and in the server's listen queue, which the server's own histogram cannot see.
   */
  acceptedKeptAlive: Percentiles | undefined
  acceptedOnNewConnection: number
  /** The longest part of a probe's latency before it was written: a new connection's handshake. */
  maxWaitMs: number
  /** The latest a probe left against its schedule: the probe process's own delay, not the server's. */
  maxSendLagMs: number
}

/** A finished probe, as the scenario reports and checks it. */
export interface ProbeOutcome {
  result: ProbeResult
  /** The probe's part of the row check's text; says NOTHING TO CHECK when it measured nothing. */
  line: string
  /** False when no probe was sent, answered or accepted: the run then fails. */
  measured: boolean
  /** The flood's run with the probe's events added, so the row check accounts for every row of the organization. */
  withProbeEvents: (run: HttpRun) => HttpRun
}

export interface RunningProbe {
  /** Tells the probe the flood has begun; resolves once every probe has its answer. */
  run: () => Promise<ProbeOutcome>
  /** Ends the probe process if it is still running (a failed run); call it on every path. */
  stop: () => void
}

/** The probe's requests, and where they went: the parent keeps the dedup_ids, the probe only sends bodies. */
interface ProbeRequests {
  bodies: string[]
  dedupIds: string[]
}

/** The same ~1 KB single events as the flood, enough for the probed window (the middle 80 % of the run). */
function probeRequests (seconds: number, rate: number): ProbeRequests {
  const scenario = singleEvents()
  const count = Math.max(1, Math.floor(0.8 * seconds * rate))
  const requests = Array.from({ length: count }, () => scenario.nextBody())
  return { bodies: requests.map((request) => request.body), dedupIds: requests.flatMap((request) => request.dedupIds) }
}

function probePlan (setup: ProbeSetup, bodies: string[]): ProbePlan {
  return {
    origin: setup.origin,
    path: '/api/events',
    apiKey: setup.apiKey,
    bodies,
    intervalMs: 1000 / setup.ratePerSecond,
    // The middle 80 % of the run: autocannon opens its connections first, and stops with requests in flight.
    leadMs: 100 * setup.seconds,
    connections: PROBE_CONNECTIONS,
    maxConnections: PROBE_MAX_CONNECTIONS,
    timeoutMs: PROBE_TIMEOUT_MS
  }
}

function isProbeMessage (message: unknown): message is ProbeMessage {
  return typeof message === 'object' && message !== null && 'type' in message &&
    (message.type === 'waiting' || message.type === 'ready' || (message.type === 'done' && 'answers' in message))
}

/** The probe's next message of `type`; rejects if the probe exits first. */
function expectMessage<T extends ProbeMessage['type']> (child: ChildProcess, type: T): Promise<Extract<ProbeMessage, { type: T }>> {
  return new Promise((resolve, reject) => {
    const onMessage = (message: unknown) => {
      if (!isProbeMessage(message) || message.type !== type) return
      cleanUp()
      resolve(message as Extract<ProbeMessage, { type: T }>)
    }
    const onExit = (code: number | null) => {
      cleanUp()
      reject(new Error(`bench/probe.js exited (code ${code ?? 'none'}) before it said '${type}'`))
    }
    const cleanUp = () => {
      child.off('message', onMessage)
      child.off('exit', onExit)
    }
    child.on('message', onMessage)
    child.on('exit', onExit)
  })
}

function tellProbe (child: ChildProcess, message: ParentMessage): void {
  child.send(message)
}

/**
 * Forks the probe and has it open its connections before the flood, so that it starts on kept-alive ones;
 * `run` then starts it. The caller stops it in a `finally`.
 */
export async function forkProbe (setup: ProbeSetup): Promise<RunningProbe> {
  const requests = probeRequests(setup.seconds, setup.ratePerSecond)
  const plan = probePlan(setup, requests.bodies)
  const child = fork(PROBE_SCRIPT, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  const stop = () => { if (child.exitCode === null && child.signalCode === null) child.kill() }
  try {
    await expectMessage(child, 'waiting')
    const ready = expectMessage(child, 'ready')
    tellProbe(child, { type: 'plan', plan })
    await ready
  } catch (error) {
    stop()
    throw error
  }
  return {
    run: async () => {
      const done = expectMessage(child, 'done')
      tellProbe(child, { type: 'start' })
      const { answers } = await done
      if (answers.length !== plan.bodies.length) throw new Error(`bench/probe.js answered ${answers.length} of ${plan.bodies.length} probes`)
      return probeOutcome(setup.ratePerSecond, answers, requests.dedupIds)
    },
    stop
  }
}

function probeOutcome (ratePerSecond: number, answers: ProbeAnswer[], dedupIds: string[]): ProbeOutcome {
  const result = summarizeProbe(ratePerSecond, answers)
  const failure = probeFailure(result)
  return {
    result,
    line: `${describeProbe(result)}${failure === undefined ? '' : `: NOTHING TO CHECK (${failure})`}`,
    measured: failure === undefined,
    withProbeEvents: (run) => withProbeEvents(run, answers, dedupIds)
  }
}

function summarizeProbe (ratePerSecond: number, answers: ProbeAnswer[]): ProbeResult {
  const others: Record<number, number> = {}
  for (const { status } of answers) {
    if (status !== 0 && status !== 201 && status !== 503) others[status] = (others[status] ?? 0) + 1
  }
  const count = (status: number) => answers.filter((answer) => answer.status === status).length
  const accepted = answers.filter((answer) => answer.status === 201)
  const latencies = (some: ProbeAnswer[]) => some.length === 0 ? undefined : percentiles(some.map((answer) => answer.latencyMs))
  return {
    ratePerSecond,
    sent: answers.length,
    accepted: accepted.length,
    shed: count(503),
    others,
    unanswered: count(0),
    acceptedLatency: latencies(accepted),
    acceptedKeptAlive: latencies(accepted.filter((answer) => answer.reused)),
    acceptedOnNewConnection: accepted.filter((answer) => !answer.reused).length,
    maxWaitMs: Math.max(0, ...answers.map((answer) => answer.waitMs)),
    maxSendLagMs: Math.max(0, ...answers.map((answer) => answer.sendLagMs))
  }
}

/** Why the probe measured nothing: no probe sent, none answered, or none accepted (no latency to report). */
function probeFailure (probe: ProbeResult): string | undefined {
  if (probe.sent === 0) return 'no probe was sent'
  if (probe.unanswered === probe.sent) return `none of ${probe.sent} probes was answered`
  if (probe.accepted === 0) return `none of ${probe.sent} probes was accepted (201): no accepted latency to report`
  return undefined
}

const ms = (value: number) => value.toFixed(1)
const latencyText = (latency: Percentiles) => `p50 ${ms(latency.p50)}, p99 ${ms(latency.p99)}, max ${ms(latency.max)} ms`

function describeProbe (probe: ProbeResult): string {
  const { acceptedLatency, acceptedKeptAlive } = probe
  const others = Object.entries(probe.others).map(([status, count]) => `${count} × ${status}`)
  const accepted = acceptedLatency === undefined
    ? ''
    : ` (${latencyText(acceptedLatency)}; ${probe.acceptedOnNewConnection} of them on a new connection; ` +
      `kept-alive only: ${acceptedKeptAlive === undefined ? 'none' : latencyText(acceptedKeptAlive)})`
  return `probe ${probe.ratePerSecond}/s: ${probe.sent} sent, ${probe.accepted} × 201${accepted}, ${probe.shed} × 503, ` +
    `${others.length === 0 ? '0 other' : others.join(', ')}, ${probe.unanswered} unanswered; ` +
    `handshakes ≤ ${ms(probe.maxWaitMs)} ms, send lag ≤ ${ms(probe.maxSendLagMs)} ms`
}

function withProbeEvents (run: HttpRun, answers: ProbeAnswer[], dedupIds: string[]): HttpRun {
  const acceptedIds = new Set(run.acceptedIds)
  const unansweredDedupIds = new Set(run.unansweredDedupIds)
  answers.forEach((answer, index) => {
    for (const id of acceptedIdsOf(answer.status, answer.body)) acceptedIds.add(id)
    const dedupId = dedupIds[index]
    // Without an answer, a probe may or may not have been stored: like the flood's requests cut off at the end.
    if (answer.status === 0 && dedupId !== undefined) unansweredDedupIds.add(dedupId)
  })
  return { ...run, acceptedIds, unansweredDedupIds }
}
