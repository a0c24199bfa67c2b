import pino from 'pino'
import { openDatabase } from '../db/embedded-postgres.js'
import { ConfigSchema } from '../lib/config.js'
import { topFrames } from './cpu-profile.js'
import { withClient } from '../test/support/database.js'
import { describeBacklog, measureBacklog } from './delivery-backlog.js'
import {
  DELIVERY_SCENARIOS, describeDeliveryScenarios, runDeliveryScenarios, type DeliveryContext, type DeliveryScenarioName
} from './delivery.js'
import {
  batches, checkRows, CONNECTIONS, loadFailures, PAYLOAD_BYTES, repeatedEvent, runHttpLoad, singleEvents, type HttpScenario
} from './http-load.js'
import { measureOverload, overloadConnections, overloadProbeRate, type OverloadResult } from './overload.js'
import { ADMIN_TOKEN, addWebhook, createOrganization, deleteCreatedOrganizations, type Organization } from './organizations.js'
import { countRows, runRawInserts } from './raw-insert.js'
import { startReceiver, type Receiver } from './receiver.js'
import { describeRetentionDrop, dropFilledPartition, fillDayPartition } from './retention-drop.js'
import { benchFailures, renderReport, saveReport, type Report, type ScenarioResult, type SoakResult } from './report.js'
import { peakMb, sampleRss, startServer, type BenchServer } from './server.js'
import { describeSubscriptionDrain, measureSubscriptionDrain, subscriptionDrainEvents } from './subscription-drain.js'
import { DEFAULT_REPLAY_RATE, describeSubscriptionReplay, measureSubscriptionReplay, subscriptionReplayEvents } from './subscription-replay.js'

/**
 * `npm run bench`: the ingest scenarios against the production build, each after a warm-up, a soak
 * for memory growth, then the delivery scenarios (a separate dist/worker.js per scenario); prints
 * the tables, appends them to bench/results/<date>.md, and fails if a row check fails (an acknowledged event
 * without its row, a row nobody was told about, an event not delivered to an endpoint, nothing to check) or a
 * run cannot have measured its scenario (no request succeeded, a non-2xx answer or a request left unanswered,
 * a failed INSERT); see benchFailures. No timing assertions anywhere: the numbers depend on the machine and
 * are reported, not enforced.
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
const SCENARIOS = [
  'raw', 'ingest', 'ingest+webhooks', 'ingest+webhooks+delivery', 'duplicates', 'batch', 'subscription-drain', 'subscription-replay', 'ingest-2-processes', ...DELIVERY_SCENARIOS,
  'delivery-backlog', 'retention-drop', 'overload'
] as const
type ScenarioName = typeof SCENARIOS[number]
/** Too long for every run (a million rows written, a minute of draining): only when named. */
const NOT_BY_DEFAULT: ReadonlySet<ScenarioName> = new Set(['delivery-backlog', 'retention-drop'])
const SELECTED = selectedScenarios(process.env.BENCH_SCENARIOS)
const BACKLOG_ROWS = positiveNumber(process.env.BENCH_BACKLOG_ROWS, 1_000_000)
const PACED_ROUNDS = Math.round(positiveNumber(process.env.BENCH_PACED_ROUNDS, 3))
const RETENTION_DROP_ROWS = positiveNumber(process.env.BENCH_RETENTION_DROP_ROWS, 1_000_000)
const OVERLOAD_CONNECTIONS = overloadConnections(process.env.BENCH_OVERLOAD_CONNECTIONS)
const OVERLOAD_PROBE_RATE = overloadProbeRate(process.env.BENCH_OVERLOAD_PROBE_RATE)
const SUBSCRIPTION_DRAIN_EVENTS = Math.round(positiveNumber(process.env.BENCH_SUBSCRIPTION_DRAIN_EVENTS, subscriptionDrainEvents(DURATION_SECONDS)))
const REPLAY_EVENTS = Math.round(positiveNumber(process.env.BENCH_REPLAY_EVENTS, subscriptionReplayEvents(DURATION_SECONDS)))
const REPLAY_RATE = Math.round(positiveNumber(process.env.BENCH_REPLAY_RATE, DEFAULT_REPLAY_RATE))

const LOG_LEVEL = process.env.LOG_LEVEL ?? 'info'

const log = pino({ name: 'bench', level: 'warn' })

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
  if (list === undefined || list.trim() === '') return new Set(SCENARIOS.filter((name) => !NOT_BY_DEFAULT.has(name)))
  const names = list.split(',').map((name) => name.trim())
  const unknown = names.filter((name) => !(SCENARIOS as readonly string[]).includes(name))
  if (unknown.length > 0) throw new Error(`BENCH_SCENARIOS: unknown ${unknown.join(', ')}; choose from ${SCENARIOS.join(', ')}`)
  return new Set(names as ScenarioName[])
}

// Load-shedding bounds a slower or busier machine (CI's) crosses under the throughput scenarios' load. Those
// scenarios measure throughput, so the bounds are off there unless the caller sets them; the overload scenario,
// which measures shedding, runs with the caller's values or the defaults.
const SHEDDING_BOUNDS = ['OVERLOAD_MAX_EVENT_LOOP_DELAY_MS', 'INGEST_QUEUE_MAX_WAIT_MS'] as const
const sheddingSettings = (unset: (name: typeof SHEDDING_BOUNDS[number]) => string): Record<string, string> =>
  Object.fromEntries(SHEDDING_BOUNDS.map((name) => [name, process.env[name] ?? unset(name)]))

/** What the benchmarked server runs with, on top of the caller's environment. */
function serverSettings (webhookWorker: 'on' | 'off'): Record<string, string> {
  return {
    ...sheddingSettings(() => '0'),
    WEBHOOK_WORKER: webhookWorker,
    LOG_LEVEL,
    ADMIN_TOKEN,
    // High enough never to answer 429, while the limiter still does its work for every request.
    RATE_LIMIT_ENTERPRISE: '1000000000',
    RATE_LIMIT_ANONYMOUS: '1000000000',
    // The receivers of the webhook scenarios listen on loopback.
    WEBHOOK_ALLOW_PRIVATE_URLS: 'true'
  }
}

/** What the separate delivery worker (dist/worker.js) runs with, on top of the caller's environment. */
function workerSettings (): Record<string, string> {
  return { LOG_LEVEL, WEBHOOK_ALLOW_PRIVATE_URLS: 'true' }
}

/** The caller's settings that change the server's behaviour, so a result says what it was measured with. */
function describeOverrides (): string {
  const ownedByBench = new Set(['HOST', 'PORT', 'DATABASE_URL', 'LOG_LEVEL', ...Object.keys(serverSettings('off'))]
    .filter((name) => !(SHEDDING_BOUNDS as readonly string[]).includes(name)))
  const names = [...Object.keys(ConfigSchema.properties), 'NODE_OPTIONS']
    .filter((name) => !ownedByBench.has(name) && process.env[name] !== undefined && process.env[name] !== '')
  return names.length === 0 ? 'server settings: defaults' : `server settings: ${names.map((name) => `${name}=${process.env[name] ?? ''}`).join(', ')}`
}

async function addWebhooks (baseUrl: string, organization: Organization, receiverUrl: string): Promise<void> {
  for (let index = 0; index < WEBHOOKS_PER_ORGANIZATION; index++) await addWebhook(baseUrl, organization, `${receiverUrl}/hook/${index}`)
}

interface HttpScenarioSpec {
  name: string
  scenario: () => HttpScenario
  prepare?: (organization: Organization) => Promise<void>
  outboxPerEvent?: number
  /** Started with the measured load (not the warm-up); what it says joins the row check's line. */
  during?: () => Promise<string>
  /** More than one (WEB_CONCURRENCY): /stats/ingest then answers for whichever process gets the request, so no events per INSERT. */
  processes?: number
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
  const perProcessStats = (spec.processes ?? 1) > 1
  const before = perProcessStats ? undefined : await ingestStats(server)
  const alongside = spec.during?.()
  const { result: run, rssSamples } = await sampleRss(server, () => runHttpLoad(server.baseUrl, organization, scenario, DURATION_SECONDS))
  const note = await alongside
  const after = perProcessStats ? undefined : await ingestStats(server)
  const rows = await checkRows(databaseUrl, organization.id, run, spec.outboxPerEvent)
  const check = note === undefined ? rows : { ...rows, summary: `${note}; ${rows.summary}` }
  const { result } = run
  const failures = loadFailures(run)
  console.log(`${spec.name}: ${result.requests.average.toFixed(0)} requests/s, p99 ${result.latency.p99} ms; ${check.summary}` +
    failures.map((failure) => `; FAILED: ${failure}`).join(''))
  return {
    name: spec.name,
    requestsPerSecond: result.requests.average,
    eventsPerSecond: run.acceptedIds.size / result.duration,
    p50: result.latency.p50,
    p99: result.latency.p99,
    max: result.latency.max,
    non2xx: result.non2xx + result.errors,
    // With several processes the sampled one is the cluster's primary, which serves no request.
    peakRssMb: perProcessStats ? undefined : peakMb(rssSamples),
    eventsPerInsert: before === undefined || after === undefined || after.groups === before.groups
      ? undefined
      : (after.events - before.events) / (after.groups - before.groups),
    rowCheck: check.summary,
    rowCheckOk: check.ok,
    failures
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
  // 0 rows = 0 inserts agrees but checks nothing.
  const ok = rows === run.inserts && run.inserts > 0
  const summary = `${rows} rows = ${run.inserts} inserts: ${run.inserts === 0 ? 'NOTHING TO CHECK (no INSERT succeeded)' : ok ? 'OK' : 'MISMATCH'}`
  // Nothing here should fail: a failed INSERT means the figures are not those of the obvious design.
  const failures = run.errors > 0 ? [`${run.errors} INSERTs failed`] : []
  console.log(`raw: ${(run.inserts / run.seconds).toFixed(0)} inserts/s, p99 ${run.latencyMs.p99.toFixed(1)} ms; ${summary}` +
    failures.map((failure) => `; FAILED: ${failure}`).join(''))
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
    rowCheckOk: ok,
    failures
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
  const failures: string[] = []
  for (let slice = 0; slice < slices; slice++) {
    const { result: run, rssSamples } = await sampleRss(server, () => runHttpLoad(server.baseUrl, organization, scenario, 10))
    requests += run.result.requests.total
    peakMb = Math.max(peakMb, ...rssSamples)
    rssEvery10sMb.push(rssSamples.at(-1) ?? 0)
    failures.push(...loadFailures(run).map((failure) => `${(slice + 1) * 10} s slice: ${failure}`))
  }
  for (const failure of failures) console.log(`soak: FAILED: ${failure}`)
  return {
    seconds: slices * 10,
    requestsPerSecond: requests / (slices * 10),
    rssEvery10sMb,
    startMb: rssEvery10sMb[0] ?? 0,
    endMb: rssEvery10sMb.at(-1) ?? 0,
    peakMb,
    failures
  }
}

async function databaseVersion (databaseUrl: string): Promise<string> {
  return await withClient(databaseUrl, async (client) => {
    const { rows } = await client.query<{ version: string, sync: string }>('SELECT current_setting(\'server_version\') AS version, current_setting(\'synchronous_commit\') AS sync')
    return `PostgreSQL ${rows[0]?.version ?? '?'} (synchronous_commit ${rows[0]?.sync ?? '?'})`
  })
}

async function withServer<T> (
  databaseUrl: string, webhookWorker: 'on' | 'off', work: (server: BenchServer) => Promise<T>, cpuProfileDir?: string, env: Record<string, string> = {}
): Promise<T> {
  const server = await startServer({
    databaseUrl,
    env: { ...serverSettings(webhookWorker), ...env },
    cluster: Number(env.WEB_CONCURRENCY ?? process.env.WEB_CONCURRENCY ?? 1) > 1,
    ...(cpuProfileDir === undefined ? {} : { cpuProfileDir })
  })
  try {
    return await work(server)
  } finally {
    await server.stop()
  }
}

/** The top frames of a profiled run, and why they would not be the scenario's (a profile of error answers). */
async function profile (databaseUrl: string, name: keyof typeof PROFILED_SCENARIOS): Promise<{ scenario: string, frames: string[], failures: string[] }> {
  const run = await withServer(databaseUrl, 'off', async (server) => {
    const organization = await createOrganization(server.baseUrl, `bench-profile-${name}`)
    return await runHttpLoad(server.baseUrl, organization, PROFILED_SCENARIOS[name](), DURATION_SECONDS)
  }, PROFILE_DIR)
  return { scenario: name, frames: await topFrames(PROFILE_DIR), failures: loadFailures(run) }
}

/**
 * retention-drop (not in the default set): ingest, then the same ingest while the day partitions holding
 * RETENTION_DROP_ROWS events are dropped half-way through (the target: within 10 %).
 */
async function measureRetentionDrop (server: BenchServer, databaseUrl: string): Promise<ScenarioResult[]> {
  const owner = await createOrganization(server.baseUrl, 'bench-retention-drop-filler')
  const fillSeconds = await fillDayPartition(databaseUrl, owner.id, RETENTION_DROP_ROWS)
  console.log(`retention-drop: ${RETENTION_DROP_ROWS} events written into one day partition in ${fillSeconds.toFixed(0)} s`)
  const baseline = await measureHttp(server, databaseUrl, { name: 'ingest, no drop', scenario: singleEvents })
  const dropping = await measureHttp(server, databaseUrl, {
    name: 'retention-drop',
    scenario: singleEvents,
    during: async () => {
      await new Promise((resolve) => setTimeout(resolve, DURATION_SECONDS * 500))
      const ms = await dropFilledPartition(databaseUrl)
      return `${RETENTION_DROP_ROWS} rows dropped in ${ms.toFixed(0)} ms`
    }
  })
  console.log(`retention-drop: ${(100 * dropping.requestsPerSecond / baseline.requestsPerSecond).toFixed(0)} % of the throughput without a drop`)
  return [baseline, dropping]
}

/** Runs the selected ingest scenarios on one server (delivery worker off), the soak and the delivering variant on their own. */
async function runIngestScenarios (databaseUrl: string, receiverUrl: string): Promise<Pick<Report, 'scenarios' | 'soak'>> {
  const withWebhooks = (name: string, server: BenchServer): HttpScenarioSpec => ({
    name,
    scenario: singleEvents,
    prepare: (organization) => addWebhooks(server.baseUrl, organization, receiverUrl),
    outboxPerEvent: WEBHOOKS_PER_ORGANIZATION
  })
  const scenarios = await withServer(databaseUrl, 'off', async (server) => {
    const specs: Partial<Record<ScenarioName, HttpScenarioSpec>> = {
      ingest: { name: 'ingest', scenario: singleEvents },
      'ingest+webhooks': withWebhooks('ingest+webhooks', server),
      duplicates: { name: 'duplicates', scenario: repeatedEvent },
      batch: { name: 'batch', scenario: batches }
    }
    const results: ScenarioResult[] = []
    for (const name of SCENARIOS) {
      const spec = specs[name]
      if (!SELECTED.has(name)) continue
      if (name === 'raw') results.push(await measureRaw(server, databaseUrl))
      else if (name === 'subscription-drain') results.push(await measureSubscriptionDrain(server, databaseUrl, SUBSCRIPTION_DRAIN_EVENTS, WARM_UP_SECONDS))
      else if (name === 'subscription-replay') results.push(await measureSubscriptionReplay(server, databaseUrl, REPLAY_EVENTS, REPLAY_RATE))
      else if (spec) results.push(await measureHttp(server, databaseUrl, spec))
    }
    if (SELECTED.has('retention-drop')) results.push(...await measureRetentionDrop(server, databaseUrl))
    return results
  })
  // A fresh server, so the soak's memory is that of steady ingest, not left over from the batch scenario.
  const soakResult = SOAK_SECONDS > 0 ? await withServer(databaseUrl, 'off', soak) : undefined
  if (SELECTED.has('ingest+webhooks+delivery')) {
    scenarios.push(await withServer(databaseUrl, 'on', (server) => measureHttp(server, databaseUrl, withWebhooks('ingest+webhooks+delivery', server))))
  }
  if (SELECTED.has('ingest-2-processes')) {
    // The same DATABASE_POOL_MAX as `ingest`, split between the two processes.
    const spec: HttpScenarioSpec = { name: 'ingest-2-processes', scenario: singleEvents, processes: 2 }
    scenarios.push(await withServer(databaseUrl, 'off', (server) => measureHttp(server, databaseUrl, spec), undefined, { WEB_CONCURRENCY: '2' }))
  }
  return { scenarios, soak: soakResult }
}

/**
 * overload: a fresh server per connection count (what one count leaves in memory is not the next one's), with
 * the caller's OVERLOAD_* settings or the defaults; after the same warm-up as the other scenarios, at 50 connections.
 */
async function runOverload (databaseUrl: string): Promise<OverloadResult[]> {
  if (!SELECTED.has('overload')) return []
  const results: OverloadResult[] = []
  for (const connections of OVERLOAD_CONNECTIONS) {
    results.push(await withServer(databaseUrl, 'off', async (server) => {
      await runHttpLoad(server.baseUrl, await createOrganization(server.baseUrl, 'bench-warm-up-overload'), singleEvents(), WARM_UP_SECONDS)
      return await measureOverload(server, databaseUrl, connections, DURATION_SECONDS, OVERLOAD_PROBE_RATE)
    }, undefined, sheddingSettings((name) => String((ConfigSchema.properties[name] as { default?: unknown }).default))))
  }
  return results
}

/** Pending deliveries already in the database: a worker would send them too, so a report says so. */
async function pendingDeliveries (databaseUrl: string): Promise<number> {
  return await withClient(databaseUrl, async (client) => {
    const { rows } = await client.query<{ n: number }>('SELECT count(*)::int AS n FROM deliveries WHERE status = \'pending\'')
    return rows[0]?.n ?? 0
  })
}

/** The delivery scenarios on a server with WEBHOOK_WORKER=off; each scenario deletes its organizations after it. */
async function runDelivery (databaseUrl: string, receiver: Receiver): Promise<Pick<Report, 'deliveries' | 'backlog'>> {
  const isSelected = (name: DeliveryScenarioName | 'delivery-backlog') => SELECTED.has(name)
  if (!DELIVERY_SCENARIOS.some(isSelected) && !isSelected('delivery-backlog')) return { deliveries: [], backlog: undefined }
  // The ingest scenarios' outbox rows would be drained by the scenarios' workers too: they go first.
  await deleteCreatedOrganizations(databaseUrl)
  const others = await pendingDeliveries(databaseUrl)
  if (others > 0) console.log(`note: ${others} pending deliveries of other organizations are in the database; the workers will send them too`)
  return await withServer(databaseUrl, 'off', async (server) => {
    const context: DeliveryContext = {
      databaseUrl, server, receiver, workerEnv: workerSettings(), durationSeconds: DURATION_SECONDS, warmUpSeconds: WARM_UP_SECONDS, pacedRounds: PACED_ROUNDS
    }
    const cleanUp = async () => { await deleteCreatedOrganizations(databaseUrl) }
    const deliveries = await runDeliveryScenarios(context, isSelected, cleanUp)
    if (!isSelected('delivery-backlog')) return { deliveries, backlog: undefined }
    const backlog = await measureBacklog(context, BACKLOG_ROWS)
    await cleanUp()
    return { deliveries: [...deliveries, backlog.result], backlog }
  })
}

/** The selected drain, delivery and retention scenarios' set-up for the report's settings line ('' when none runs). */
function describeDelivery (): string {
  const parts = [
    DELIVERY_SCENARIOS.some((name) => SELECTED.has(name)) ? describeDeliveryScenarios(DURATION_SECONDS, PACED_ROUNDS) : '',
    SELECTED.has('subscription-drain') ? describeSubscriptionDrain(SUBSCRIPTION_DRAIN_EVENTS) : '',
    SELECTED.has('subscription-replay') ? describeSubscriptionReplay(REPLAY_EVENTS, REPLAY_RATE) : '',
    SELECTED.has('delivery-backlog') ? describeBacklog(BACKLOG_ROWS) : '',
    SELECTED.has('retention-drop') ? describeRetentionDrop(RETENTION_DROP_ROWS) : ''
  ]
  return parts.filter((part) => part !== '').map((part) => `${part}; `).join('')
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
    const { scenarios, soak: soakResult } = await runIngestScenarios(database.url, receiver.url)
    const { deliveries, backlog } = await runDelivery(database.url, receiver)
    const overload = await runOverload(database.url)
    const results: Report = {
      database: `${process.env.DATABASE_URL ? 'DATABASE_URL' : 'embedded'}, ${await databaseVersion(database.url)}`,
      settings: `${CONNECTIONS} connections, ${WARM_UP_SECONDS} s warm-up + ${DURATION_SECONDS} s per scenario, ~${PAYLOAD_BYTES} B payloads, ` +
        `production build, LOG_LEVEL=${LOG_LEVEL}; ${WEBHOOKS_PER_ORGANIZATION} webhooks per organization in the ` +
        'ingest+webhooks scenarios (outbox rows written; the delivery worker runs in the server only in ingest+webhooks+delivery, ' +
        `its receiver in the bench process); ${describeDelivery()}` +
        `${SELECTED.has('overload') ? `overload: ${OVERLOAD_CONNECTIONS.join(' and ')} connections, a fresh server each, ` +
          `a paced probe of ${OVERLOAD_PROBE_RATE} requests/s in a process of its own beside the flood; ` : ''}${describeOverrides()}`,
      scenarios,
      soak: soakResult,
      deliveries,
      backlog,
      overload,
      profile: CPU_PROFILE === undefined ? undefined : await profile(database.url, CPU_PROFILE)
    }
    const report = renderReport(results)
    console.log(`\n${report}`)
    console.log(`\nappended to ${await saveReport(report, RESULTS_DIR)}`)
    // The same list ends the report; repeated last so that it is what a CI log shows.
    const failures = benchFailures(results)
    if (failures.length > 0) console.error(`\nbench FAILED: ${failures.length} check(s):\n${failures.map((failure) => `  ${failure}`).join('\n')}`)
    return failures.length === 0 ? 0 : 1
  } finally {
    receiver.close()
    console.log('removing the organizations the run created, with their events')
    await deleteCreatedOrganizations(database.url).finally(() => database.stop())
  }
}

// An explicit exit: embedded-postgres's exit hook would otherwise end the process with code 0.
process.exit(await main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error)
  return 1
}))
