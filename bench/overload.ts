import { checkRows, runHttpLoad, singleEvents, type HttpRun } from './http-load.js'
import { createOrganization, type Organization } from './organizations.js'
import { forkProbe, type ProbeOutcome, type ProbeResult } from './probe-client.js'
import { peakMb, sampleRss, type BenchServer } from './server.js'
import { percentiles, type Percentiles } from './stats.js'

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
  probe: ProbeOutcome
  /** The flood's answers' latencies (ms), by status. */
  latencies: Map<number, number[]>
  rssSamples: number[]
}

/** The flood and, in its own process, the paced probe, started together; the server's RSS sampled meanwhile. */
async function floodAndProbe (
  server: BenchServer, organization: Organization, connections: number, seconds: number, probeRate: number
): Promise<FloodAndProbe> {
  const probe = await forkProbe({ origin: server.baseUrl, apiKey: organization.key, seconds, ratePerSecond: probeRate })
  const latencies = new Map<number, number[]>()
  const onAnswer = (status: number, latencyMs: number) => {
    let list = latencies.get(status)
    if (list === undefined) latencies.set(status, list = [])
    list.push(latencyMs)
  }
  try {
    const { result: [run, outcome], rssSamples } = await sampleRss(server, () =>
      Promise.all([runHttpLoad(server.baseUrl, organization, singleEvents(), seconds, { connections, onAnswer }), probe.run()]))
    return { run, probe: outcome, latencies, rssSamples }
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
  const { run, probe, latencies, rssSamples } = await floodAndProbe(server, organization, connections, seconds, probeRate)
  const after = await acceptedBuckets(server)
  const rows = await checkRows(databaseUrl, organization.id, probe.withProbeEvents(run))
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
    probe: probe.result,
    rowCheck: `${probe.line}; flood + probe: ${rows.summary}`,
    rowCheckOk: rows.ok && probe.measured
  }
  const inServer = overload.acceptedServerSide
  console.log(`overload ${connections}: ${overload.acceptedPerSecond.toFixed(0)} accepted/s, 201 p99 ${overload.accepted.p99.toFixed(0)} ms ` +
    `(in the server: ${inServer ? `${(100 * inServer.within100MsShare).toFixed(1)} % within 100 ms, p99 ≤ ${inServer.p99AtMostSeconds * 1000} ms` : 'n/a'}), ` +
    `statuses ${JSON.stringify(statuses)}, ${overload.timeouts} timeouts, peak RSS ${overload.peakRssMb?.toFixed(0) ?? 'n/a'} MB; ${overload.rowCheck}`)
  return overload
}
