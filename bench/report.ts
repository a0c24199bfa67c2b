import { mkdir, appendFile, access } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import type { OverloadResult } from './overload.js'
import type { Percentiles } from './stats.js'

export interface ScenarioResult {
  name: string
  requestsPerSecond: number
  eventsPerSecond: number
  p50: number
  p99: number
  max: number
  non2xx: number
  peakRssMb: number | undefined
  /** Average events per INSERT statement (group commit); undefined when nothing was written. */
  eventsPerInsert: number | undefined
  rowCheck: string
  rowCheckOk: boolean
  /** Why the run's figures cannot stand (see loadFailures); empty when they can. */
  failures: string[]
}

export interface SoakResult {
  seconds: number
  requestsPerSecond: number
  rssEvery10sMb: number[]
  startMb: number
  endMb: number
  peakMb: number
  /** An RSS series of a server answering errors is not that of steady ingest. */
  failures: string[]
}

/** One row of the delivery table: deliveries of the measured endpoints of one scenario (or phase of it). */
export interface DeliveryResult {
  name: string
  events: number
  endpoints: number
  /** Distinct (event, endpoint) pairs that arrived. */
  deliveries: number
  /** Deliveries from the first arrival to the last. */
  deliveriesPerSecond: number
  /** Send → arrival; undefined where the events were queued before the worker started. */
  latencyMs: Percentiles | undefined
  /** Events per second the paced sender achieved; undefined for queued events. */
  sentPerSecond: number | undefined
  duplicates: number
  rowCheck: string
  rowCheckOk: boolean
  /** Why the scenario's figures cannot stand apart from the row check (failed ingest requests); empty when they can. */
  failures: string[]
  workerPeakRssMb: number | undefined
  serverPeakRssMb: number | undefined
}

/** delivery-backlog: the worker's RSS at a large backlog against an idle worker's. */
export interface BacklogResult {
  rows: number
  insertSeconds: number
  idleRssMb: number | undefined
  sampledSeconds: number
  result: DeliveryResult
}

export interface Report {
  database: string
  settings: string
  scenarios: ScenarioResult[]
  soak: SoakResult | undefined
  deliveries: DeliveryResult[]
  backlog: BacklogResult | undefined
  overload: OverloadResult[]
  profile: { scenario: string, frames: string[], failures: string[] } | undefined
}

const fixed = (value: number, digits = 0) => value.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits })
const mb = (value: number | undefined) => value === undefined ? 'n/a' : fixed(value)

function scenario (report: Report, name: string): ScenarioResult | undefined {
  return report.scenarios.find((result) => result.name === name)
}

/** The rows of delivery-slow-endpoint: the fast endpoint, drained and paced, alone and beside the slow one. */
export const SLOW_ENDPOINT_ROWS = {
  drainAlone: 'delivery-slow-endpoint (drain, fast alone)',
  drainBeside: 'delivery-slow-endpoint (drain, fast beside slow)',
  pacedAlone: 'delivery-slow-endpoint (paced, fast alone)',
  pacedBeside: 'delivery-slow-endpoint (paced, fast beside slow)'
} as const

function delivery (report: Report, name: string): DeliveryResult | undefined {
  return report.deliveries.find((result) => result.name === name)
}

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[middle] ?? 0 : ((sorted[middle - 1] ?? 0) + (sorted[middle] ?? 0)) / 2
}

/** The median p50 and p99 of the rounds named `<name> #<round>`. */
function medianLatency (report: Report, name: string): { p50: number, p99: number } | undefined {
  const rounds = report.deliveries.filter((result) => result.name.startsWith(`${name} #`)).flatMap((result) => result.latencyMs ? [result.latencyMs] : [])
  if (rounds.length === 0) return undefined
  return { p50: median(rounds.map((latency) => latency.p50)), p99: median(rounds.map((latency) => latency.p99)) }
}

const targetLine = (name: string, met: boolean | undefined, measured: string) => `| ${name} | ${measured} | ${met === undefined ? 'n/a' : met ? 'met' : 'not met'} |`
const TARGETS_HEADER = ['| target | measured | |', '| --- | --- | --- |']

function ratio (numerator: ScenarioResult | undefined, denominator: ScenarioResult | undefined, field: 'requestsPerSecond' | 'eventsPerSecond' = 'eventsPerSecond'): number | undefined {
  if (!numerator || !denominator || denominator[field] === 0) return undefined
  return numerator[field] / denominator[field]
}

/** subscription-drain's events leased and acked per second against the same run's single-event ingest requests/s. */
function subscriptionDrainRatio (report: Report): number | undefined {
  const drain = scenario(report, 'subscription-drain')
  const ingest = scenario(report, 'ingest')
  return drain && ingest && ingest.requestsPerSecond > 0 ? drain.eventsPerSecond / ingest.requestsPerSecond : undefined
}

// Below this, growth over the soak's second half is noise (one GC cycle more or less).
const FLAT_MB = 10

function secondHalfGrowthMb (soak: SoakResult): number {
  const samples = soak.rssEvery10sMb
  const middle = samples[Math.floor((samples.length - 1) / 2)] ?? soak.startMb
  return soak.endMb - middle
}

/** The ingest targets, each with the measured value: the benchmark reports them, tests never assert them. */
function targets (report: Report): string[] {
  const raw = scenario(report, 'raw')
  const ingest = scenario(report, 'ingest')
  const line = targetLine
  const ingestRaw = ratio(ingest, raw)
  const duplicates = ratio(scenario(report, 'duplicates'), ingest, 'requestsPerSecond')
  const webhooks = ratio(scenario(report, 'ingest+webhooks'), ingest)
  const batch = scenario(report, 'batch')
  const subscriptionDrain = subscriptionDrainRatio(report)
  const peak = Math.max(...report.scenarios.flatMap((result) => result.peakRssMb === undefined ? [] : [result.peakRssMb]), report.soak?.peakMb ?? 0)
  // Caches fill and the heap settles during the first half; growth in the second half would be a leak.
  const growth = report.soak ? secondHalfGrowthMb(report.soak) : undefined
  return [
    ...TARGETS_HEADER,
    line('ingest / raw ≥ 2.0', ingestRaw === undefined ? undefined : ingestRaw >= 2, ingestRaw === undefined ? 'n/a' : fixed(ingestRaw, 2)),
    line('ingest p99 < 25 ms', ingest && ingest.p99 < 25, ingest ? `${ingest.p99} ms` : 'n/a'),
    line('duplicates ≥ 2× ingest (requests/s)', duplicates === undefined ? undefined : duplicates >= 2, duplicates === undefined ? 'n/a' : `${fixed(duplicates, 2)}×`),
    line('ingest+webhooks ≥ 0.8× ingest', webhooks === undefined ? undefined : webhooks >= 0.8, webhooks === undefined ? 'n/a' : `${fixed(webhooks, 2)}×`),
    line('batch ≥ 25 000 events/s', batch && batch.eventsPerSecond >= 25_000, batch ? `${fixed(batch.eventsPerSecond)} events/s` : 'n/a'),
    line('subscription-drain events/s ÷ ingest requests/s ≥ 1.0', subscriptionDrain === undefined ? undefined : subscriptionDrain >= 1,
      subscriptionDrain === undefined ? 'n/a' : `${fixed(subscriptionDrain, 2)}×`),
    line('server RSS < 250 MB', peak > 0 ? peak < 250 : undefined, peak > 0 ? `peak ${fixed(peak)} MB` : 'n/a'),
    line('RSS flat over the soak', growth === undefined ? undefined : growth < FLAT_MB, growth === undefined ? 'not run' : `${fixed(growth, 1)} MB over its second half`)
  ]
}

function ingestSection (report: Report): string[] {
  const rows = report.scenarios.map((result) =>
    `| ${result.name} | ${fixed(result.requestsPerSecond)} | ${fixed(result.eventsPerSecond)} | ${fixed(result.p50, 1)} | ${fixed(result.p99, 1)} | ${fixed(result.max, 1)} | ${result.non2xx} | ${mb(result.peakRssMb)} | ${result.eventsPerInsert === undefined ? '—' : fixed(result.eventsPerInsert, 1)} | ${result.rowCheck} |`)
  const ingestRaw = ratio(scenario(report, 'ingest'), scenario(report, 'raw'))
  const lines = [
    '',
    '| scenario | requests/s | events/s | p50 ms | p99 ms | max ms | non-2xx | server peak RSS MB | events per INSERT | rows |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ...rows,
    '',
    `ingest / raw = ${ingestRaw === undefined ? 'n/a' : fixed(ingestRaw, 2)}`
  ]
  const subscriptionDrain = subscriptionDrainRatio(report)
  if (scenario(report, 'subscription-drain')) {
    lines.push(`subscription-drain events/s ÷ ingest requests/s = ${subscriptionDrain === undefined ? 'n/a (ingest not run)' : fixed(subscriptionDrain, 2)}`)
  }
  if (report.soak) {
    const { soak } = report
    lines.push('', `Soak: ingest for ${soak.seconds} s at ${fixed(soak.requestsPerSecond)} requests/s; server RSS ${fixed(soak.startMb)} MB after 10 s, ` +
      `${fixed(soak.endMb)} MB at the end, peak ${fixed(soak.peakMb)} MB; per 10 s: ${soak.rssEvery10sMb.map((value) => fixed(value)).join(', ')}`)
  }
  return [...lines, '', ...targets(report)]
}

/** delivery-drain's deliveries/s against the same run's single-event ingest requests/s. */
function drainRatio (report: Report): number | undefined {
  const drain = delivery(report, 'delivery-drain')
  const ingest = scenario(report, 'ingest')
  return drain && ingest && ingest.requestsPerSecond > 0 ? drain.deliveriesPerSecond / ingest.requestsPerSecond : undefined
}

/** The delivery targets, each with the measured value (reported, never asserted). */
function deliveryTargets (report: Report): string[] {
  const ms = (value: number | undefined) => value === undefined ? 'n/a' : `${fixed(value, 1)} ms`
  const drain = drainRatio(report)
  const latency = delivery(report, 'delivery-latency')?.latencyMs
  const drainAlone = delivery(report, SLOW_ENDPOINT_ROWS.drainAlone)
  const drainBeside = delivery(report, SLOW_ENDPOINT_ROWS.drainBeside)
  const alone = medianLatency(report, SLOW_ENDPOINT_ROWS.pacedAlone)
  const beside = medianLatency(report, SLOW_ENDPOINT_ROWS.pacedBeside)
  const rate = drainAlone && drainBeside && drainAlone.deliveriesPerSecond > 0 ? drainBeside.deliveriesPerSecond / drainAlone.deliveriesPerSecond : undefined
  const p99 = alone && beside && alone.p99 > 0 ? beside.p99 / alone.p99 : undefined
  const times = (value: number | undefined) => value === undefined ? 'n/a' : `${fixed(value, 2)}×`
  return [
    ...TARGETS_HEADER,
    targetLine('delivery-drain deliveries/s ÷ ingest requests/s ≥ 1.0', drain === undefined ? undefined : drain >= 1, times(drain)),
    targetLine('delivery-latency p50 < 50 ms', latency && latency.p50 < 50, ms(latency?.p50)),
    targetLine('delivery-latency p99 < 250 ms', latency && latency.p99 < 250, ms(latency?.p99)),
    targetLine('fast endpoint beside a slow one, drained: deliveries/s ≥ 0.8× alone', rate === undefined ? undefined : rate >= 0.8,
      rate === undefined ? 'n/a' : `${times(rate)} (${fixed(drainAlone?.deliveriesPerSecond ?? 0)} → ${fixed(drainBeside?.deliveriesPerSecond ?? 0)})`),
    targetLine('fast endpoint beside a slow one, paced: median p99 ≤ 1.2× alone', p99 === undefined ? undefined : p99 <= 1.2,
      p99 === undefined ? 'n/a' : `${times(p99)} (${ms(alone?.p99)} → ${ms(beside?.p99)})`)
  ]
}

function deliveryRow (report: Report, result: DeliveryResult): string {
  const ratioCell = result.name !== 'delivery-drain' ? '—' : fixedOrNa(drainRatio(report), 2)
  const latency = result.latencyMs
  const cells = [
    result.name, fixed(result.events), String(result.endpoints), fixed(result.deliveries), fixed(result.deliveriesPerSecond), ratioCell,
    result.sentPerSecond === undefined ? '—' : fixed(result.sentPerSecond),
    latency ? fixed(latency.p50, 1) : '—', latency ? fixed(latency.p99, 1) : '—', latency ? fixed(latency.max, 1) : '—',
    String(result.duplicates), mb(result.workerPeakRssMb), mb(result.serverPeakRssMb), result.rowCheck
  ]
  return `| ${cells.join(' | ')} |`
}

function deliverySection (report: Report): string[] {
  const lines = [
    '',
    '| delivery scenario | events | endpoints | deliveries | deliveries/s | ÷ ingest requests/s | events/s sent | p50 ms | p99 ms | max ms | duplicates | worker peak RSS MB | server peak RSS MB | rows |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ...report.deliveries.map((result) => deliveryRow(report, result))
  ]
  if (report.backlog) {
    const { backlog } = report
    lines.push('', `Worker RSS at a ${fixed(backlog.rows)}-row backlog: idle ${mb(backlog.idleRssMb)} MB, peak ${mb(backlog.result.workerPeakRssMb)} MB ` +
      `while draining for ${fixed(backlog.sampledSeconds)} s (${fixed(backlog.result.deliveries)} deliveries, ${fixed(backlog.result.deliveriesPerSecond)}/s); ` +
      `backlog written with SQL in ${fixed(backlog.insertSeconds)} s`)
  }
  return report.deliveries.some((result) => result.name !== 'delivery-backlog') ? [...lines, '', ...deliveryTargets(report)] : lines
}

const fixedOrNa = (value: number | undefined, digits: number) => value === undefined ? 'n/a' : fixed(value, digits)

// The overload targets at the largest connection count: what is accepted stays fast, memory stays bounded.
const OVERLOAD_P99_MS = 100
const OVERLOAD_RSS_MB = 300

function overloadSection (report: Report): string[] {
  const rows = report.overload.map((result) => {
    const others = Object.entries(result.statuses).filter(([status]) => status !== '201' && status !== '503').map(([status, count]) => `${status}: ${fixed(count)}`)
    const cells = [
      fixed(result.connections), fixed(result.answeredPerSecond), fixed(result.acceptedPerSecond),
      fixed(result.statuses[201] ?? 0), fixed(result.statuses[503] ?? 0), others.length === 0 ? '0' : others.join(', '),
      `${fixed(result.errors)} / ${fixed(result.timeouts)}`,
      fixed(result.accepted.p50, 1), fixed(result.accepted.p99, 1), fixed(result.accepted.max, 1),
      result.acceptedServerSide ? `${fixed(100 * result.acceptedServerSide.within100MsShare, 1)} % / ≤ ${fixed(result.acceptedServerSide.p99AtMostSeconds * 1000)}` : 'n/a',
      result.shed ? fixed(result.shed.p99, 1) : '—', mb(result.peakRssMb), result.rowCheck
    ]
    return `| ${cells.join(' | ')} |`
  })
  const largest = report.overload.reduce<OverloadResult | undefined>((top, result) => top === undefined || result.connections > top.connections ? result : top, undefined)
  const at = `${largest ? fixed(largest.connections) : 'the most'} connections`
  const keptAlive = largest?.probe.acceptedKeptAlive
  const probed = largest?.probe.acceptedLatency
  return [
    '',
    '| overload: connections | answers/s | accepted/s | 201 | 503 | other | errors / timeouts | 201 p50 ms | 201 p99 ms | 201 max ms | 201 in the server: within 100 ms / p99 ms | 503 p99 ms | server peak RSS MB | rows |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ...rows,
    '',
    ...TARGETS_HEADER,
    targetLine(`paced probe: accepted p99 < ${OVERLOAD_P99_MS} ms on kept-alive connections at ${at}`,
      keptAlive && keptAlive.p99 < OVERLOAD_P99_MS, keptAlive ? `${fixed(keptAlive.p99, 1)} ms` : 'n/a'),
    targetLine(`paced probe: accepted p99 < ${OVERLOAD_P99_MS} ms with new connections included at ${at}`,
      probed && probed.p99 < OVERLOAD_P99_MS, probed ? `${fixed(probed.p99, 1)} ms (${fixed(largest?.probe.acceptedOnNewConnection ?? 0)} of ${fixed(largest?.probe.accepted ?? 0)} on a new connection)` : 'n/a'),
    targetLine(`the flood's own accepted p99 < ${OVERLOAD_P99_MS} ms at ${at} (autocannon's queueing included)`,
      largest && largest.accepted.p99 < OVERLOAD_P99_MS, largest ? `${fixed(largest.accepted.p99, 1)} ms` : 'n/a'),
    targetLine(`accepted p99 < ${OVERLOAD_P99_MS} ms in the server (reading the request to answering it) at ${largest ? fixed(largest.connections) : 'the most'} connections`,
      largest?.acceptedServerSide === undefined ? undefined : largest.acceptedServerSide.p99AtMostSeconds * 1000 <= OVERLOAD_P99_MS,
      largest?.acceptedServerSide === undefined ? 'n/a' : `≤ ${fixed(largest.acceptedServerSide.p99AtMostSeconds * 1000)} ms (histogram bound); ${fixed(100 * largest.acceptedServerSide.within100MsShare, 1)} % within 100 ms`),
    targetLine(`server RSS < ${OVERLOAD_RSS_MB} MB at ${largest ? fixed(largest.connections) : 'the most'} connections`,
      largest?.peakRssMb === undefined ? undefined : largest.peakRssMb < OVERLOAD_RSS_MB, largest ? `peak ${mb(largest.peakRssMb)} MB` : 'n/a'),
    targetLine('no request timed out (flood, and probes without an answer)', largest && report.overload.every((result) => result.timeouts === 0 && result.probe.unanswered === 0),
      fixed(report.overload.reduce((sum, result) => sum + result.timeouts + result.probe.unanswered, 0)))
  ]
}

/**
 * Everything that makes the run fail, one line each: a row check that did not pass (a mismatch, or nothing to
 * check), and a run that cannot have measured what it names. Timings and targets are never among them.
 */
export function benchFailures (report: Report): string[] {
  const of = (name: string, result: { rowCheck: string, rowCheckOk: boolean, failures: string[] }) => [
    ...(result.rowCheckOk ? [] : [`${name}: row check: ${result.rowCheck}`]),
    ...result.failures.map((failure) => `${name}: ${failure}`)
  ]
  return [
    ...report.scenarios.flatMap((result) => of(result.name, result)),
    ...(report.soak?.failures ?? []).map((failure) => `soak: ${failure}`),
    ...report.deliveries.flatMap((result) => of(result.name, result)),
    ...(report.profile?.failures ?? []).map((failure) => `CPU profile of ${report.profile?.scenario ?? ''}: ${failure}`),
    ...report.overload.flatMap((result) => result.rowCheckOk ? [] : [`overload at ${result.connections} connections: row check: ${result.rowCheck}`])
  ]
}

export function renderReport (report: Report): string {
  const lines = [
    `Machine: ${os.cpus().length} × ${os.cpus()[0]?.model ?? 'unknown CPU'}, ${fixed(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}, ${os.platform()} ${os.release()}`,
    `Database: ${report.database}`,
    `Settings: ${report.settings}`
  ]
  if (report.scenarios.length > 0 || report.soak) lines.push(...ingestSection(report))
  if (report.deliveries.length > 0) lines.push(...deliverySection(report))
  if (report.overload.length > 0) lines.push(...overloadSection(report))
  if (report.profile) lines.push('', `CPU profile of the server during \`${report.profile.scenario}\` (self time, top frames):`, '', ...report.profile.frames)
  const failures = benchFailures(report)
  if (failures.length > 0) lines.push('', `**FAILED** (${failures.length}):`, '', ...failures.map((failure) => `- ${failure}`))
  return lines.join('\n')
}

/** Appends the run to bench/results/<date>.md (created with a title if new); returns the file's path. */
export async function saveReport (text: string, resultsDir: string): Promise<string> {
  const now = new Date()
  const file = path.join(resultsDir, `${now.toISOString().slice(0, 10)}.md`)
  await mkdir(resultsDir, { recursive: true })
  const exists = await access(file).then(() => true, () => false)
  const title = exists ? '' : `# Benchmark, ${now.toISOString().slice(0, 10)}\n`
  await appendFile(file, `${title}\n## Run of ${now.toISOString().slice(0, 16).replace('T', ' ')} UTC (\`npm run bench\`)\n\n${text}\n`)
  return file
}
