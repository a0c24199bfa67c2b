import { randomUUID } from 'node:crypto'
import { createServer, type Server } from 'node:http'
import { once } from 'node:events'
import pg from 'pg'
import pino from 'pino'
import { openDatabase } from '../db/embedded-postgres.js'
import { ConfigSchema } from '../plugins/config.js'
import { topFrames } from './cpu-profile.js'
import {
  batches, checkRows, CONNECTIONS, PAYLOAD_BYTES, repeatedEvent, runHttpLoad, singleEvents, type HttpScenario, type Organization
} from './http-load.js'
import { countRows, runRawInserts } from './raw-insert.js'
import { renderReport, saveReport, type ScenarioResult, type SoakResult } from './report.js'
import { sampleRss, startServer, type BenchServer } from './server.js'

/**
 * `npm run bench`: the scenarios of issue 5 against the production build, each after a warm-up, then a soak
 * for memory growth; prints a table, appends it to bench/results/<date>.md, and fails if a row check fails
 * (an acknowledged event without its row, or a row nobody was told about). No timing assertions anywhere:
 * the numbers depend on the machine and are reported, not enforced.
 */
const WARM_UP_SECONDS = positiveNumber(process.env.BENCH_WARM_UP_SECONDS, 3)
const DURATION_SECONDS = positiveNumber(process.env.BENCH_DURATION_SECONDS, 10)
// The first half lets the dedup cache fill and the heap reach its working size; flatness is judged on the second.
const SOAK_SECONDS = nonNegativeNumber(process.env.BENCH_SOAK_SECONDS, 120)
const PROFILED_SCENARIOS = { ingest: singleEvents, duplicates: repeatedEvent, batch: batches } as const
const CPU_PROFILE = profiledScenario(process.env.BENCH_CPU_PROFILE)
const PROFILE_DIR = '.data/bench-profile'
const RESULTS_DIR = 'bench/results'
const WEBHOOKS_PER_ORGANIZATION = 2
const SCENARIOS = ['raw', 'ingest', 'ingest+webhooks', 'ingest+webhooks+delivery', 'duplicates', 'batch'] as const
type ScenarioName = typeof SCENARIOS[number]
const SELECTED = selectedScenarios(process.env.BENCH_SCENARIOS)

const log = pino({ name: 'bench', level: 'warn' })
/** Every organization the run creates; deleted at the end (with their events) so runs stay comparable. */
const createdOrganizationIds: string[] = []

function positiveNumber (value: string | undefined, fallback: number): number {
  const parsed = Number(value)
  return value !== undefined && value !== '' && Number.isFinite(parsed) && parsed > 0 ? parsed : fallback
}

function nonNegativeNumber (value: string | undefined, fallback: number): number {
  return value === '0' ? 0 : positiveNumber(value, fallback)
}

/** BENCH_CPU_PROFILE: unset, or the scenario to run once more under `node --cpu-prof` (1 = ingest). */
function profiledScenario (value: string | undefined): keyof typeof PROFILED_SCENARIOS | undefined {
  if (value === undefined || value === '' || value === '0') return undefined
  if (value === '1') return 'ingest'
  if (value in PROFILED_SCENARIOS) return value as keyof typeof PROFILED_SCENARIOS
  throw new Error(`BENCH_CPU_PROFILE: choose 1, ${Object.keys(PROFILED_SCENARIOS).join(', ')}`)
}

function selectedScenarios (list: string | undefined): Set<ScenarioName> {
  if (list === undefined || list.trim() === '') return new Set(SCENARIOS)
  const names = list.split(',').map((name) => name.trim())
  const unknown = names.filter((name) => !(SCENARIOS as readonly string[]).includes(name))
  if (unknown.length > 0) throw new Error(`BENCH_SCENARIOS: unknown ${unknown.join(', ')}; choose from ${SCENARIOS.join(', ')}`)
  return new Set(names as ScenarioName[])
}

/** What the benchmarked server runs with, on top of the caller's environment. */
function serverSettings (webhookWorker: 'on' | 'off'): Record<string, string> {
  return {
    WEBHOOK_WORKER: webhookWorker,
    LOG_LEVEL: process.env.LOG_LEVEL ?? 'info',
    // High enough never to answer 429, while the limiter still does its work for every request.
    RATE_LIMIT_ENTERPRISE: '1000000000',
    RATE_LIMIT_ANONYMOUS: '1000000000',
    // The receiver of the ingest+webhooks scenario listens on loopback.
    WEBHOOK_ALLOW_PRIVATE_URLS: 'true'
  }
}

/** The caller's settings that change the server's behaviour, so a result says what it was measured with. */
function describeOverrides (): string {
  const ownedByBench = new Set(['HOST', 'PORT', 'DATABASE_URL', 'LOG_LEVEL', ...Object.keys(serverSettings('off'))])
  const names = [...Object.keys(ConfigSchema.properties), 'NODE_OPTIONS']
    .filter((name) => !ownedByBench.has(name) && process.env[name] !== undefined && process.env[name] !== '')
  return names.length === 0 ? 'server settings: defaults' : `server settings: ${names.map((name) => `${name}=${process.env[name] ?? ''}`).join(', ')}`
}

async function createOrganization (baseUrl: string, name: string): Promise<Organization> {
  const adminToken = process.env.ADMIN_TOKEN
  const response = await fetch(`${baseUrl}/api/keys/generate`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(adminToken ? { 'x-admin-token': adminToken } : {}) },
    body: JSON.stringify({ organization_name: `${name}-${randomUUID()}`, tier: 'enterprise' })
  })
  if (response.status !== 201) throw new Error(`POST /api/keys/generate answered ${response.status}: ${await response.text()}`)
  const body = await response.json() as { api_key: string, organization_id: string }
  createdOrganizationIds.push(body.organization_id)
  return { id: body.organization_id, key: body.api_key }
}

async function addWebhooks (baseUrl: string, organization: Organization, receiverUrl: string): Promise<void> {
  for (let index = 0; index < WEBHOOKS_PER_ORGANIZATION; index++) {
    const response = await fetch(`${baseUrl}/api/webhooks`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': organization.key },
      body: JSON.stringify({ url: `${receiverUrl}/hook/${index}` })
    })
    if (response.status !== 201) throw new Error(`POST /api/webhooks answered ${response.status}: ${await response.text()}`)
  }
}

/** A webhook receiver on loopback that accepts everything. */
async function startReceiver (): Promise<{ url: string, server: Server }> {
  const server = createServer((request, response) => {
    request.resume()
    request.on('end', () => response.writeHead(204).end())
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('receiver has no port')
  return { url: `http://127.0.0.1:${address.port}`, server }
}

interface HttpScenarioSpec {
  name: string
  scenario: () => HttpScenario
  prepare?: (organization: Organization) => Promise<void>
  outboxPerEvent?: number
}

async function measureHttp (server: BenchServer, databaseUrl: string, spec: HttpScenarioSpec): Promise<ScenarioResult> {
  const organizationFor = async (name: string) => {
    const organization = await createOrganization(server.baseUrl, name)
    await spec.prepare?.(organization)
    return organization
  }
  await runHttpLoad(server.baseUrl, await organizationFor(`bench-warm-up-${spec.name}`), spec.scenario(), WARM_UP_SECONDS)
  const organization = await organizationFor(`bench-${spec.name}`)
  const scenario = spec.scenario()
  const before = await ingestStats(server)
  const { result: run, rssSamples } = await sampleRss(server, () => runHttpLoad(server.baseUrl, organization, scenario, DURATION_SECONDS))
  const after = await ingestStats(server)
  const check = await checkRows(databaseUrl, organization.id, run, spec.outboxPerEvent)
  const { result } = run
  console.log(`${spec.name}: ${result.requests.average.toFixed(0)} requests/s, p99 ${result.latency.p99} ms; ${check.summary}`)
  return {
    name: spec.name,
    requestsPerSecond: result.requests.average,
    eventsPerSecond: run.acceptedIds.size / result.duration,
    p50: result.latency.p50,
    p99: result.latency.p99,
    max: result.latency.max,
    non2xx: result.non2xx + result.errors,
    peakRssMb: rssSamples.length === 0 ? undefined : Math.max(...rssSamples),
    eventsPerInsert: after.groups === before.groups ? undefined : (after.events - before.events) / (after.groups - before.groups),
    rowCheck: check.summary,
    rowCheckOk: check.ok
  }
}

/** The server's group commit counters (/stats/ingest): how many events each shared INSERT carried. */
async function ingestStats (server: BenchServer): Promise<{ groups: number, events: number }> {
  const response = await fetch(`${server.baseUrl}/stats/ingest`)
  if (response.status !== 200) throw new Error(`GET /stats/ingest answered ${response.status}`)
  return await response.json() as { groups: number, events: number }
}

async function measureRaw (server: BenchServer, databaseUrl: string): Promise<ScenarioResult> {
  await runRawInserts(databaseUrl, (await createOrganization(server.baseUrl, 'bench-warm-up-raw')).id, WARM_UP_SECONDS)
  const organization = await createOrganization(server.baseUrl, 'bench-raw')
  const run = await runRawInserts(databaseUrl, organization.id, DURATION_SECONDS)
  const rows = await countRows(databaseUrl, organization.id)
  const ok = rows === run.inserts
  const summary = `${rows} rows = ${run.inserts} inserts: ${ok ? 'OK' : 'MISMATCH'}`
  console.log(`raw: ${(run.inserts / run.seconds).toFixed(0)} inserts/s, p99 ${run.latencyMs.p99.toFixed(1)} ms; ${summary}`)
  return {
    name: 'raw',
    requestsPerSecond: run.inserts / run.seconds,
    eventsPerSecond: run.inserts / run.seconds,
    p50: run.latencyMs.p50,
    p99: run.latencyMs.p99,
    max: run.latencyMs.max,
    non2xx: run.errors,
    peakRssMb: undefined,
    eventsPerInsert: 1,
    rowCheck: summary,
    rowCheckOk: ok
  }
}

/** Ingest for SOAK_SECONDS in 10 s slices, sampling the server's RSS; growth shows as a rising series. */
async function soak (server: BenchServer): Promise<SoakResult> {
  const organization = await createOrganization(server.baseUrl, 'bench-soak')
  const scenario = singleEvents()
  const slices = Math.max(1, Math.round(SOAK_SECONDS / 10))
  const rssEvery10sMb: number[] = []
  let requests = 0
  let peakMb = 0
  for (let slice = 0; slice < slices; slice++) {
    const { result: run, rssSamples } = await sampleRss(server, () => runHttpLoad(server.baseUrl, organization, scenario, 10))
    requests += run.result.requests.total
    peakMb = Math.max(peakMb, ...rssSamples)
    rssEvery10sMb.push(rssSamples.at(-1) ?? 0)
  }
  return {
    seconds: slices * 10,
    requestsPerSecond: requests / (slices * 10),
    rssEvery10sMb,
    startMb: rssEvery10sMb[0] ?? 0,
    endMb: rssEvery10sMb.at(-1) ?? 0,
    peakMb
  }
}

async function removeBenchData (databaseUrl: string): Promise<void> {
  console.log(`removing the run's ${createdOrganizationIds.length} organizations and their events`)
  const client = new pg.Client({ connectionString: databaseUrl })
  await client.connect()
  try {
    await client.query('DELETE FROM organizations WHERE id = ANY($1::uuid[])', [createdOrganizationIds])
  } finally {
    await client.end()
  }
}

async function databaseVersion (databaseUrl: string): Promise<string> {
  const client = new pg.Client({ connectionString: databaseUrl })
  await client.connect()
  try {
    const { rows } = await client.query<{ version: string, sync: string }>('SELECT current_setting(\'server_version\') AS version, current_setting(\'synchronous_commit\') AS sync')
    return `PostgreSQL ${rows[0]?.version ?? '?'} (synchronous_commit ${rows[0]?.sync ?? '?'})`
  } finally {
    await client.end()
  }
}

async function profile (databaseUrl: string, name: keyof typeof PROFILED_SCENARIOS): Promise<string[]> {
  const server = await startServer({ databaseUrl, env: serverSettings('off'), cpuProfileDir: PROFILE_DIR })
  try {
    const organization = await createOrganization(server.baseUrl, `bench-profile-${name}`)
    await runHttpLoad(server.baseUrl, organization, PROFILED_SCENARIOS[name](), DURATION_SECONDS)
  } finally {
    await server.stop()
  }
  return topFrames(PROFILE_DIR)
}

/** Runs the selected scenarios on one server (delivery worker off), and the delivering variant on its own. */
async function runScenarios (databaseUrl: string, receiverUrl: string): Promise<{ scenarios: ScenarioResult[], soak: SoakResult | undefined }> {
  const withWebhooks = (name: string): HttpScenarioSpec => ({
    name,
    scenario: singleEvents,
    prepare: (organization) => addWebhooks(server.baseUrl, organization, receiverUrl),
    outboxPerEvent: WEBHOOKS_PER_ORGANIZATION
  })
  const specs: Partial<Record<ScenarioName, HttpScenarioSpec>> = {
    ingest: { name: 'ingest', scenario: singleEvents },
    'ingest+webhooks': withWebhooks('ingest+webhooks'),
    duplicates: { name: 'duplicates', scenario: repeatedEvent },
    batch: { name: 'batch', scenario: batches }
  }
  const scenarios: ScenarioResult[] = []
  let soakResult: SoakResult | undefined
  let server = await startServer({ databaseUrl, env: serverSettings('off') })
  try {
    for (const name of SCENARIOS) {
      const spec = specs[name]
      if (!SELECTED.has(name)) continue
      if (name === 'raw') scenarios.push(await measureRaw(server, databaseUrl))
      else if (spec) scenarios.push(await measureHttp(server, databaseUrl, spec))
    }
  } finally {
    await server.stop()
  }
  // A fresh server, so the soak's memory is that of steady ingest, not left over from the batch scenario.
  if (SOAK_SECONDS > 0) {
    server = await startServer({ databaseUrl, env: serverSettings('off') })
    try {
      soakResult = await soak(server)
    } finally {
      await server.stop()
    }
  }
  if (SELECTED.has('ingest+webhooks+delivery')) {
    server = await startServer({ databaseUrl, env: serverSettings('on') })
    try {
      scenarios.push(await measureHttp(server, databaseUrl, withWebhooks('ingest+webhooks+delivery')))
    } finally {
      await server.stop()
    }
  }
  return { scenarios, soak: soakResult }
}

async function main (): Promise<number> {
  const database = await openDatabase({
    DATABASE_URL: process.env.DATABASE_URL || undefined,
    EMBEDDED_POSTGRES_DIR: process.env.BENCH_EMBEDDED_POSTGRES_DIR ?? '.data/postgres-bench',
    EMBEDDED_POSTGRES_PORT: Number(process.env.BENCH_EMBEDDED_POSTGRES_PORT ?? 54331)
  }, log)
  const receiver = await startReceiver()
  try {
    console.log(`each scenario: ${WARM_UP_SECONDS} s warm-up, then ${DURATION_SECONDS} s measured at ${CONNECTIONS} connections\n`)
    const { scenarios, soak: soakResult } = await runScenarios(database.url, receiver.url)
    const report = renderReport({
      database: `${process.env.DATABASE_URL ? 'DATABASE_URL' : 'embedded'}, ${await databaseVersion(database.url)}`,
      settings: `${CONNECTIONS} connections, ${WARM_UP_SECONDS} s warm-up + ${DURATION_SECONDS} s per scenario, ~${PAYLOAD_BYTES} B payloads, ` +
        `production build, LOG_LEVEL=${serverSettings('off').LOG_LEVEL}; ${WEBHOOKS_PER_ORGANIZATION} webhooks per organization in the ` +
        'ingest+webhooks scenarios (outbox rows written; the delivery worker runs in the server only in ingest+webhooks+delivery, ' +
        `its receiver in the bench process); ${describeOverrides()}`,
      scenarios,
      soak: soakResult,
      profile: CPU_PROFILE === undefined ? undefined : { scenario: CPU_PROFILE, frames: await profile(database.url, CPU_PROFILE) }
    })
    console.log(`\n${report}`)
    console.log(`\nappended to ${await saveReport(report, RESULTS_DIR)}`)
    return scenarios.every((result) => result.rowCheckOk) ? 0 : 1
  } finally {
    receiver.server.closeAllConnections()
    receiver.server.close()
    await removeBenchData(database.url).finally(() => database.stop())
  }
}

// An explicit exit: embedded-postgres's exit hook would otherwise end the process with code 0.
process.exit(await main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error)
  return 1
}))
