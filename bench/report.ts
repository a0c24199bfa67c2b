import { mkdir, appendFile, access } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

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
}

export interface SoakResult {
  seconds: number
  requestsPerSecond: number
  rssEvery10sMb: number[]
  startMb: number
  endMb: number
  peakMb: number
}

export interface Report {
  database: string
  settings: string
  scenarios: ScenarioResult[]
  soak: SoakResult | undefined
  profile: { scenario: string, frames: string[] } | undefined
}

const fixed = (value: number, digits = 0) => value.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits })
const mb = (value: number | undefined) => value === undefined ? 'n/a' : fixed(value)

function scenario (report: Report, name: string): ScenarioResult | undefined {
  return report.scenarios.find((result) => result.name === name)
}

function ratio (numerator: ScenarioResult | undefined, denominator: ScenarioResult | undefined, field: 'requestsPerSecond' | 'eventsPerSecond' = 'eventsPerSecond'): number | undefined {
  if (!numerator || !denominator || denominator[field] === 0) return undefined
  return numerator[field] / denominator[field]
}

// Below this, growth over the soak's second half is noise (one GC cycle more or less).
const FLAT_MB = 10

function secondHalfGrowthMb (soak: SoakResult): number {
  const samples = soak.rssEvery10sMb
  const middle = samples[Math.floor((samples.length - 1) / 2)] ?? soak.startMb
  return soak.endMb - middle
}

/** Issue 5's targets, each with the measured value: the benchmark reports them, tests never assert them. */
function targets (report: Report): string[] {
  const raw = scenario(report, 'raw')
  const ingest = scenario(report, 'ingest')
  const line = (name: string, met: boolean | undefined, measured: string) => `| ${name} | ${measured} | ${met === undefined ? 'n/a' : met ? 'met' : 'not met'} |`
  const ingestRaw = ratio(ingest, raw)
  const duplicates = ratio(scenario(report, 'duplicates'), ingest, 'requestsPerSecond')
  const webhooks = ratio(scenario(report, 'ingest+webhooks'), ingest)
  const batch = scenario(report, 'batch')
  const peak = Math.max(...report.scenarios.flatMap((result) => result.peakRssMb === undefined ? [] : [result.peakRssMb]), report.soak?.peakMb ?? 0)
  // Caches fill and the heap settles during the first half; growth in the second half would be a leak.
  const growth = report.soak ? secondHalfGrowthMb(report.soak) : undefined
  return [
    '| target | measured | |',
    '| --- | --- | --- |',
    line('ingest / raw ≥ 2.0', ingestRaw === undefined ? undefined : ingestRaw >= 2, ingestRaw === undefined ? 'n/a' : fixed(ingestRaw, 2)),
    line('ingest p99 < 25 ms', ingest && ingest.p99 < 25, ingest ? `${ingest.p99} ms` : 'n/a'),
    line('duplicates ≥ 2× ingest (requests/s)', duplicates === undefined ? undefined : duplicates >= 2, duplicates === undefined ? 'n/a' : `${fixed(duplicates, 2)}×`),
    line('ingest+webhooks ≥ 0.8× ingest', webhooks === undefined ? undefined : webhooks >= 0.8, webhooks === undefined ? 'n/a' : `${fixed(webhooks, 2)}×`),
    line('batch ≥ 25 000 events/s', batch && batch.eventsPerSecond >= 25_000, batch ? `${fixed(batch.eventsPerSecond)} events/s` : 'n/a'),
    line('server RSS < 250 MB', peak > 0 ? peak < 250 : undefined, peak > 0 ? `peak ${fixed(peak)} MB` : 'n/a'),
    line('RSS flat over the soak', growth === undefined ? undefined : growth < FLAT_MB, growth === undefined ? 'not run' : `${fixed(growth, 1)} MB over its second half`)
  ]
}

export function renderReport (report: Report): string {
  const rows = report.scenarios.map((result) =>
    `| ${result.name} | ${fixed(result.requestsPerSecond)} | ${fixed(result.eventsPerSecond)} | ${fixed(result.p50, 1)} | ${fixed(result.p99, 1)} | ${fixed(result.max, 1)} | ${result.non2xx} | ${mb(result.peakRssMb)} | ${result.eventsPerInsert === undefined ? '—' : fixed(result.eventsPerInsert, 1)} | ${result.rowCheck} |`)
  const ingestRaw = ratio(scenario(report, 'ingest'), scenario(report, 'raw'))
  const lines = [
    `Machine: ${os.cpus().length} × ${os.cpus()[0]?.model ?? 'unknown CPU'}, ${fixed(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}, ${os.platform()} ${os.release()}`,
    `Database: ${report.database}`,
    `Settings: ${report.settings}`,
    '',
    '| scenario | requests/s | events/s | p50 ms | p99 ms | max ms | non-2xx | server peak RSS MB | events per INSERT | rows |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ...rows,
    '',
    `ingest / raw = ${ingestRaw === undefined ? 'n/a' : fixed(ingestRaw, 2)}`
  ]
  if (report.soak) {
    const { soak } = report
    lines.push('', `Soak: ingest for ${soak.seconds} s at ${fixed(soak.requestsPerSecond)} requests/s; server RSS ${fixed(soak.startMb)} MB after 10 s, ` +
      `${fixed(soak.endMb)} MB at the end, peak ${fixed(soak.peakMb)} MB; per 10 s: ${soak.rssEvery10sMb.map((value) => fixed(value)).join(', ')}`)
  }
  lines.push('', ...targets(report))
  if (report.profile) lines.push('', `CPU profile of the server during \`${report.profile.scenario}\` (self time, top frames):`, '', ...report.profile.frames)
  return lines.join('\n')
}

/** Appends the run to bench/results/<date>.md (created with a title if new); returns the file's path. */
export async function saveReport (text: string, resultsDir: string): Promise<string> {
  const now = new Date()
  const file = path.join(resultsDir, `${now.toISOString().slice(0, 10)}.md`)
  await mkdir(resultsDir, { recursive: true })
  const exists = await access(file).then(() => true, () => false)
  const title = exists ? '' : `# Ingest benchmark, ${now.toISOString().slice(0, 10)}\n`
  await appendFile(file, `${title}\n## Run of ${now.toISOString().slice(0, 16).replace('T', ' ')} UTC (\`npm run bench\`)\n\n${text}\n`)
  return file
}
