import { fork, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { acceptedIdsOf, checkRows, runHttpLoad, singleEvents, type HttpRun } from './http-load.js'
import { createOrganization, type Organization } from './organizations.js'
import type { ParentMessage, ProbeAnswer, ProbeMessage, ProbePlan } from './probe.js'
import { peakMb, sampleRss, type BenchServer } from './server.js'
import { percentiles, type Percentiles } from './stats.js'

const PROBE_SCRIPT = fileURLToPath(new URL('./probe.js', import.meta.url))
// A few kept-alive connections: at the default 20 probes/s each carries one every 200 ms. Slower answers make the
// probe open more (up to the maximum) rather than queue probes behind each other in the client.
const PROBE_CONNECTIONS = 4
const PROBE_MAX_CONNECTIONS = 64
// autocannon's time-out, so that a probe and the flood give up alike.
const PROBE_TIMEOUT_MS = 10_000
const DEFAULT_PROBE_RATE = 20

/** Connection counts of the overload scenario (issue: 1 000 and 3 000 on a 2-core machine), all on loopback. */
export function overloadConnections (setting: string | undefined): number[] {
  if (setting === undefined || setting.trim() === '') return [1000, 3000]
  const counts = setting.split(',').map((value) => Number(value.trim()))
  if (counts.some((count) => !Number.isInteger(count) || count < 1 || count > 10_000)) {
    throw new Error('BENCH_OVERLOAD_CONNECTIONS: connection counts between 1 and 10 000, separated by commas')
  }
  return counts
}

/** BENCH_OVERLOAD_PROBE_RATE: the paced probe's requests per second (modest: it measures, the flood loads). */
export function overloadProbeRate (setting: string | undefined): number {
  if (setting === undefined || setting.trim() === '') return DEFAULT_PROBE_RATE
  const rate = Number(setting)
  if (!Number.isFinite(rate) || rate <= 0 || rate > 1000) throw new Error('BENCH_OVERLOAD_PROBE_RATE: requests per second, above 0 and at most 1 000')
  return rate
}

/** Cumulative counts of the server's own histogram of 201 answers to POST /api/events, by upper bound in seconds. */
type Buckets = Map<number, number>

const BUCKET_LINE = /^http_request_duration_seconds_bucket\{le="([^"]+)",method="POST",route="\/api\/events",status_code="201"\} (\d+)$/

async function acceptedBuckets (server: BenchServer): Promise<Buckets> {
  const text = await (await fetch(`${server.baseUrl}/metrics`)).text()
  const buckets: Buckets = new Map()
  for (const line of text.split('\n')) {
    const match = BUCKET_LINE.exec(line)
    if (match?.[1] !== undefined && match[2] !== undefined) buckets.set(match[1] === '+Inf' ? Infinity : Number(match[1]), Number(match[2]))
  }
  return buckets
}

/**
 * What the server measured itself (from reading a request to answering it, no socket or client time) for the
 * 201s of the run: the share within 100 ms, and the histogram bound that holds 99 % of them.
 */
export interface ServerSide {
  within100MsShare: number
  p99AtMostSeconds: number
}

function serverSide (before: Buckets, after: Buckets): ServerSide | undefined {
  const bounds = [...after.keys()].sort((a, b) => a - b)
  const counted = (bound: number) => (after.get(bound) ?? 0) - (before.get(bound) ?? 0)
  const total = counted(Infinity)
  if (total === 0) return undefined
  return {
    within100MsShare: counted(0.1) / total,
    p99AtMostSeconds: bounds.find((bound) => counted(bound) >= 0.99 * total) ?? Infinity
  }
}

/** The probe's requests, and where they went: the parent keeps the dedup_ids, the probe only sends bodies. */
interface ProbeRequests {
  bodies: string[]
  dedupIds: string[]
}

interface ProbeRun {
  answers: ProbeAnswer[]
}

interface RunningProbe {
  /** Tells the probe the flood has begun; resolves with one answer per body once the last is in. */
  start: () => Promise<ProbeRun>
  /** Ends the probe process if it is still running (a failed run). */
  stop: () => void
}

/** The same ~1 KB single events as the flood, enough for the probed window (the middle 80 % of the run). */
function probeRequests (seconds: number, rate: number): ProbeRequests {
  const scenario = singleEvents()
  const count = Math.max(1, Math.floor(0.8 * seconds * rate))
  const requests = Array.from({ length: count }, () => scenario.nextBody())
  return { bodies: requests.map((request) => request.body), dedupIds: requests.flatMap((request) => request.dedupIds) }
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

/** Forks the probe and has it open its connections before the flood, so that it starts on kept-alive ones. */
async function startProbe (plan: ProbePlan): Promise<RunningProbe> {
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
    start: async () => {
      const done = expectMessage(child, 'done')
      tellProbe(child, { type: 'start' })
      const { answers } = await done
      if (answers.length !== plan.bodies.length) throw new Error(`bench/probe.js answered ${answers.length} of ${plan.bodies.length} probes`)
      return { answers }
    },
    stop
  }
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
   * The same for the 201s sent on a kept-alive connection alone. Shed answers close their connection, and a
   * probe on a new one also waits for the handshake and in the server's listen queue, which the server's own
   * histogram cannot see.
   */
  acceptedKeptAlive: Percentiles | undefined
  acceptedOnNewConnection: number
  /** The longest part of a probe's latency before it was written: a new connection's handshake. */
  maxWaitMs: number
  /** The latest a probe left against its schedule: the probe process's own delay, not the server's. */
  maxSendLagMs: number
}

function summarizeProbe (ratePerSecond: number, run: ProbeRun): ProbeResult {
  const others: Record<number, number> = {}
  for (const { status } of run.answers) {
    if (status !== 0 && status !== 201 && status !== 503) others[status] = (others[status] ?? 0) + 1
  }
  const count = (status: number) => run.answers.filter((answer) => answer.status === status).length
  const accepted = run.answers.filter((answer) => answer.status === 201)
  const latencies = (answers: ProbeAnswer[]) => answers.length === 0 ? undefined : percentiles(answers.map((answer) => answer.latencyMs))
  return {
    ratePerSecond,
    sent: run.answers.length,
    accepted: accepted.length,
    shed: count(503),
    others,
    unanswered: count(0),
    acceptedLatency: latencies(accepted),
    acceptedKeptAlive: latencies(accepted.filter((answer) => answer.reused)),
    acceptedOnNewConnection: accepted.filter((answer) => !answer.reused).length,
    maxWaitMs: Math.max(0, ...run.answers.map((answer) => answer.waitMs)),
    maxSendLagMs: Math.max(0, ...run.answers.map((answer) => answer.sendLagMs))
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

/** The flood's run with the probe's events added, so the row check accounts for every row of the organization. */
function withProbe (run: HttpRun, probe: ProbeRun, dedupIds: string[]): HttpRun {
  const acceptedIds = new Set(run.acceptedIds)
  const unansweredDedupIds = new Set(run.unansweredDedupIds)
  probe.answers.forEach((answer, index) => {
    for (const id of acceptedIdsOf(answer.status, answer.body)) acceptedIds.add(id)
    const dedupId = dedupIds[index]
    // Without an answer, a probe may or may not have been stored: like the flood's requests cut off at the end.
    if (answer.status === 0 && dedupId !== undefined) unansweredDedupIds.add(dedupId)
  })
  return { ...run, acceptedIds, unansweredDedupIds }
}

export interface OverloadResult {
  connections: number
  seconds: number
  answeredPerSecond: number
  acceptedPerSecond: number
  /** Answers by status: 201 stored, 503 shed, anything else. */
  statuses: Record<number, number>
  /** Socket errors and requests autocannon gave up on (its 10 s timeout). */
  errors: number
  timeouts: number
  /** Latency of the 201 answers alone as the client saw them: what shedding is for. */
  accepted: Percentiles
  acceptedServerSide: ServerSide | undefined
  shed: Percentiles | undefined
  peakRssMb: number | undefined
  /** The paced probe beside the flood. */
  probe: ProbeResult
  /** The probe's line, then the row check of the flood's and the probe's events; not ok if either fails. */
  rowCheck: string
  rowCheckOk: boolean
}

interface FloodAndProbe {
  run: HttpRun
  probeRun: ProbeRun
  probeDedupIds: string[]
  /** The flood's answers' latencies (ms), by status. */
  latencies: Map<number, number[]>
  rssSamples: number[]
}

/** The flood and, in its own process, the paced probe, started together; the server's RSS sampled meanwhile. */
async function floodAndProbe (
  server: BenchServer, organization: Organization, connections: number, seconds: number, probeRate: number
): Promise<FloodAndProbe> {
  const requests = probeRequests(seconds, probeRate)
  const probe = await startProbe({
    origin: server.baseUrl,
    path: '/api/events',
    apiKey: organization.key,
    bodies: requests.bodies,
    intervalMs: 1000 / probeRate,
    // The middle 80 % of the run: autocannon opens its connections first, and stops with requests in flight.
    leadMs: 100 * seconds,
    connections: PROBE_CONNECTIONS,
    maxConnections: PROBE_MAX_CONNECTIONS,
    timeoutMs: PROBE_TIMEOUT_MS
  })
  const latencies = new Map<number, number[]>()
  const onAnswer = (status: number, latencyMs: number) => {
    let list = latencies.get(status)
    if (list === undefined) latencies.set(status, list = [])
    list.push(latencyMs)
  }
  try {
    const { result: [run, probeRun], rssSamples } = await sampleRss(server, () =>
      Promise.all([runHttpLoad(server.baseUrl, organization, singleEvents(), seconds, { connections, onAnswer }), probe.start()]))
    return { run, probeRun, probeDedupIds: requests.dedupIds, latencies, rssSamples }
  } finally {
    probe.stop()
  }
}

/**
 * Single ~1 KB events from `connections` connections, each sending its next request as soon as it has an answer,
 * for `seconds`, on a fresh organization: far more than the server can store. With shedding, what it accepts
 * keeps a short latency and the rest is refused at once with 503; the row check proves that every 201 was
 * stored and no 503 was (a stored 503 would be a row nobody was told about). Beside the flood, a paced probe in
 * a process of its own sends `probeRate` of the same events per second: the latency of its 201s is that of an
 * accepted request without autocannon's own queueing, which the flood's latencies include.
 */
export async function measureOverload (
  server: BenchServer, databaseUrl: string, connections: number, seconds: number, probeRate: number
): Promise<OverloadResult> {
  const organization = await createOrganization(server.baseUrl, `bench-overload-${connections}`)
  const before = await acceptedBuckets(server)
  const { run, probeRun, probeDedupIds, latencies, rssSamples } = await floodAndProbe(server, organization, connections, seconds, probeRate)
  const after = await acceptedBuckets(server)
  const rows = await checkRows(databaseUrl, organization.id, withProbe(run, probeRun, probeDedupIds))
  const probe = summarizeProbe(probeRate, probeRun)
  const failure = probeFailure(probe)
  const statuses = Object.fromEntries([...latencies].map(([status, list]) => [status, list.length]))
  const shed = latencies.get(503)
  const { result } = run
  const answered = [...latencies.values()].reduce((sum, list) => sum + list.length, 0)
  const overload: OverloadResult = {
    connections,
    seconds: result.duration,
    answeredPerSecond: answered / result.duration,
    acceptedPerSecond: run.acceptedIds.size / result.duration,
    statuses,
    errors: result.errors - result.timeouts,
    timeouts: result.timeouts,
    accepted: percentiles(latencies.get(201) ?? []),
    acceptedServerSide: serverSide(before, after),
    shed: shed === undefined ? undefined : percentiles(shed),
    peakRssMb: peakMb(rssSamples),
    probe,
    rowCheck: `${describeProbe(probe)}${failure === undefined ? '' : `: NOTHING TO CHECK (${failure})`}; flood + probe: ${rows.summary}`,
    rowCheckOk: rows.ok && failure === undefined
  }
  const inServer = overload.acceptedServerSide
  console.log(`overload ${connections}: ${overload.acceptedPerSecond.toFixed(0)} accepted/s, 201 p99 ${overload.accepted.p99.toFixed(0)} ms ` +
    `(in the server: ${inServer ? `${(100 * inServer.within100MsShare).toFixed(1)} % within 100 ms, p99 ≤ ${inServer.p99AtMostSeconds * 1000} ms` : 'n/a'}), ` +
    `statuses ${JSON.stringify(statuses)}, ${overload.timeouts} timeouts, peak RSS ${overload.peakRssMb?.toFixed(0) ?? 'n/a'} MB; ${overload.rowCheck}`)
  return overload
}
