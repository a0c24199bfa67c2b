import { checkRows, runHttpLoad, singleEvents } from './http-load.js'
import { createOrganization } from './organizations.js'
import { peakMb, sampleRss, type BenchServer } from './server.js'
import { percentiles, type Percentiles } from './stats.js'

/** Connection counts of the overload scenario (issue: 1 000 and 3 000 on a 2-core machine), all on loopback. */
export function overloadConnections (setting: string | undefined): number[] {
  if (setting === undefined || setting.trim() === '') return [1000, 3000]
  const counts = setting.split(',').map((value) => Number(value.trim()))
  if (counts.some((count) => !Number.isInteger(count) || count < 1 || count > 10_000)) {
    throw new Error('BENCH_OVERLOAD_CONNECTIONS: connection counts between 1 and 10 000, separated by commas')
  }
  return counts
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
  /** Latency of the 201 answers alone: what shedding is for. */
  accepted: Percentiles
  shed: Percentiles | undefined
  peakRssMb: number | undefined
  rowCheck: string
  rowCheckOk: boolean
}

/**
 * Single ~1 KB events from `connections` connections, each sending its next request as soon as it has an answer,
 * for `seconds`, on a fresh organization: far more than the server can store. With shedding, what it accepts
 * keeps a short latency and the rest is refused at once with 503; the row check proves that every 201 was
 * stored and no 503 was (a stored 503 would be a row nobody was told about).
 */
export async function measureOverload (server: BenchServer, databaseUrl: string, connections: number, seconds: number): Promise<OverloadResult> {
  const organization = await createOrganization(server.baseUrl, `bench-overload-${connections}`)
  const latencies = new Map<number, number[]>()
  const onAnswer = (status: number, latencyMs: number) => {
    let list = latencies.get(status)
    if (list === undefined) latencies.set(status, list = [])
    list.push(latencyMs)
  }
  const { result: run, rssSamples } = await sampleRss(server, () =>
    runHttpLoad(server.baseUrl, organization, singleEvents(), seconds, { connections, onAnswer }))
  const rows = await checkRows(databaseUrl, organization.id, run)
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
    shed: shed === undefined ? undefined : percentiles(shed),
    peakRssMb: peakMb(rssSamples),
    rowCheck: rows.summary,
    rowCheckOk: rows.ok
  }
  console.log(`overload ${connections}: ${overload.acceptedPerSecond.toFixed(0)} accepted/s, 201 p99 ${overload.accepted.p99} ms, ` +
    `statuses ${JSON.stringify(statuses)}, ${overload.timeouts} timeouts, peak RSS ${overload.peakRssMb?.toFixed(0) ?? 'n/a'} MB; ${rows.summary}`)
  return overload
}
