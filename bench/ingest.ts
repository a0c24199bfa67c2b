import autocannon from 'autocannon'
import { spawn, type ChildProcess } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import pg from 'pg'
import pino from 'pino'
import { openDatabase } from '../db/embedded-postgres.js'
import { freePort } from '../lib/free-port.js'

/**
 * `npm run bench`: POST /api/events against the production build (dist/server.js) at 50 connections, then
 * prints requests/s and latency, and checks the rows written against the answers. The embedded
 * PostgreSQL uses its own data dir and port so it never meets the development or test servers.
 * No timing assertions: the numbers depend on the machine.
 */
const CONNECTIONS = 50
const WARM_UP_SECONDS = 2
const DURATION_SECONDS = positiveNumber(process.env.BENCH_DURATION_SECONDS, 10)
const PAYLOAD_BYTES = 1024
const HEALTH_TIMEOUT_MS = 30_000
const STOP_TIMEOUT_MS = 15_000
const SERVER_SCRIPT = fileURLToPath(new URL('../server.js', import.meta.url))

const log = pino({ name: 'bench', level: 'warn' })

interface Organization {
  id: string
  key: string
}

interface RunStats {
  result: autocannon.Result
  /** event_id of every 2xx answer. */
  answeredIds: Set<string>
  /**
   * dedup_id of every request whose answer was never read: autocannon destroys its connections when the
   * duration ends, with up to one request per connection in flight that the server still commits.
   */
  unansweredDedupIds: Set<string>
}

function positiveNumber (value: string | undefined, fallback: number): number {
  const parsed = Number(value)
  return value !== undefined && value !== '' && Number.isFinite(parsed) && parsed > 0 ? parsed : fallback
}

// PORT=0 would hide the server's port from us, so a free one is found first (a tiny race we accept).

function startServer (databaseUrl: string, port: number): ChildProcess {
  return spawn(process.execPath, [SERVER_SCRIPT], {
    stdio: ['ignore', 'inherit', 'inherit'],
    env: {
      ...process.env,
      DATABASE_URL: databaseUrl,
      HOST: '127.0.0.1',
      PORT: String(port),
      LOG_LEVEL: 'warn',
      // The limits would otherwise turn most of the load into 429s.
      RATE_LIMIT_ANONYMOUS: '0',
      RATE_LIMIT_ENTERPRISE: '0'
    }
  })
}

/** Polls /health; gives up early if the server exits (it logs its own reason) or after 30 s. */
async function waitForHealth (child: ChildProcess, baseUrl: string): Promise<void> {
  const deadline = Date.now() + HEALTH_TIMEOUT_MS
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`dist/server.js exited (code ${child.exitCode}, signal ${child.signalCode}) before answering /health`)
    }
    const status = await fetch(`${baseUrl}/health`, { signal: AbortSignal.timeout(1000) })
      .then((response) => response.status, () => 0)
    if (status === 200) return
    await sleep(200)
  }
  throw new Error(`dist/server.js did not answer GET ${baseUrl}/health with 200 within ${HEALTH_TIMEOUT_MS / 1000} s`)
}

/** SIGTERM lets server.ts close gracefully; SIGKILL only if it hangs. */
async function stopServer (child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = once(child, 'exit')
  child.kill('SIGTERM')
  const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS)
  try {
    await exited
  } finally {
    clearTimeout(timer)
  }
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
  return { id: body.organization_id, key: body.api_key }
}

/** A body of about PAYLOAD_BYTES; only dedup_id changes between requests, so it is spliced into a template. */
function bodyTemplate (): { before: string, after: string } {
  const marker = '"__DEDUP_ID__"'
  const shell = (filler: string) => JSON.stringify({
    type: 'bench.ingest',
    source: 'bench',
    dedup_id: '__DEDUP_ID__',
    payload: { order_id: 12345, customer: { id: 'cus_bench', tier: 'enterprise' }, amount_cents: 4999, currency: 'EUR', notes: filler }
  })
  const fillerLength = Math.max(0, PAYLOAD_BYTES - shell('').length - randomUUID().length + '__DEDUP_ID__'.length)
  const [before = '', after = ''] = shell('x'.repeat(fillerLength)).split(marker)
  return { before, after }
}

/** A malformed body must not throw inside autocannon's parser; it simply counts as no event_id. */
function eventIdOf (body: string): string | undefined {
  let parsed: unknown
  try {
    parsed = JSON.parse(body)
  } catch {
    return undefined
  }
  if (typeof parsed !== 'object' || parsed === null || !('event_id' in parsed)) return undefined
  return typeof parsed.event_id === 'string' ? parsed.event_id : undefined
}

/** One autocannon run; every request gets a fresh dedup_id so none is answered as a duplicate. */
async function runLoad (baseUrl: string, organization: Organization, seconds: number): Promise<RunStats> {
  const { before, after } = bodyTemplate()
  const answeredIds = new Set<string>()
  const unansweredDedupIds = new Set<string>()
  // autocannon hands setupRequest and onResponse the same context object for one request.
  const dedupIdOf = new WeakMap<object, string>()
  const result = await autocannon({
    url: `${baseUrl}/api/events`,
    connections: CONNECTIONS,
    duration: seconds,
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': organization.key },
    requests: [{
      setupRequest: (request, context) => {
        const dedupId = randomUUID()
        unansweredDedupIds.add(dedupId)
        dedupIdOf.set(context, dedupId)
        return { ...request, body: `${before}"${dedupId}"${after}` }
      },
      onResponse: (status, body, context) => {
        unansweredDedupIds.delete(dedupIdOf.get(context) ?? '')
        const eventId = status >= 200 && status < 300 ? eventIdOf(body) : undefined
        if (eventId !== undefined) answeredIds.add(eventId)
      }
    }]
  })
  return { result, answeredIds, unansweredDedupIds }
}

interface RowCheck {
  rows: number
  /** Rows whose id a 2xx answer carried. */
  answeredRows: number
  /** Rows of requests whose answer was never read (cut off when the run stopped). */
  cutOffRows: number
}

/** Counted after the server has exited, so requests still in flight when autocannon stopped are settled. */
async function countRows (databaseUrl: string, organizationId: string, stats: RunStats): Promise<RowCheck> {
  const client = new pg.Client({ connectionString: databaseUrl })
  await client.connect()
  try {
    const { rows } = await client.query<{ rows: number, answered_rows: number, cut_off_rows: number }>(
      `SELECT count(*)::int AS rows,
              count(*) FILTER (WHERE id = ANY($2::uuid[]))::int AS answered_rows,
              count(*) FILTER (WHERE dedup_id = ANY($3::text[]))::int AS cut_off_rows
         FROM events WHERE organization_id = $1`,
      [organizationId, [...stats.answeredIds], [...stats.unansweredDedupIds]]
    )
    const [row] = rows
    if (!row) throw new Error('the row count query returned nothing')
    return { rows: row.rows, answeredRows: row.answered_rows, cutOffRows: row.cut_off_rows }
  } finally {
    await client.end()
  }
}

function printTable ({ result }: RunStats): void {
  const lines = [
    `POST /api/events, ${result.connections} connections, ${result.duration} s, ~${PAYLOAD_BYTES} B payload`,
    '',
    '| metric | value |',
    '| --- | --- |',
    `| requests/s (average) | ${result.requests.average.toFixed(1)} |`,
    `| latency p50 (ms) | ${result.latency.p50} |`,
    `| latency p99 (ms) | ${result.latency.p99} |`,
    `| latency max (ms) | ${result.latency.max} |`,
    `| 2xx | ${result['2xx']} |`,
    `| non-2xx | ${result.non2xx} |`
  ]
  if (result.errors > 0) lines.push(`| connection errors (timeouts ${result.timeouts}) | ${result.errors} |`)
  console.log(lines.join('\n'))
}

/**
 * Rows must equal the 2xx answers, apart from requests autocannon cut off at the end (the server committed
 * them, but their answers were dropped): every 2xx needs its row (no lost write) and no other row may exist
 * (no duplicate, no row behind a non-2xx answer).
 */
function reportRowCheck ({ result, unansweredDedupIds }: RunStats, check: RowCheck): boolean {
  const twoXx = result['2xx']
  const ok = check.answeredRows === twoXx && check.rows === twoXx + check.cutOffRows
  console.log(`\nrow check: ${check.rows} rows in events, ${twoXx} 2xx answers` +
    (check.cutOffRows > 0 ? ` + ${check.cutOffRows} requests cut off when the run stopped (${unansweredDedupIds.size} unanswered)` : '') +
    `: ${ok ? 'OK' : 'MISMATCH'}`)
  if (!ok) {
    console.log(`  2xx answers without a row: ${twoXx - check.answeredRows}; ` +
      `rows that match no 2xx answer and no cut-off request: ${check.rows - check.answeredRows - check.cutOffRows}`)
  }
  return ok
}

async function main (): Promise<number> {
  const database = await openDatabase({
    DATABASE_URL: process.env.DATABASE_URL || undefined,
    EMBEDDED_POSTGRES_DIR: process.env.BENCH_EMBEDDED_POSTGRES_DIR ?? '.data/postgres-bench',
    EMBEDDED_POSTGRES_PORT: Number(process.env.BENCH_EMBEDDED_POSTGRES_PORT ?? 54331)
  }, log)
  try {
    const port = await freePort()
    const baseUrl = `http://127.0.0.1:${port}`
    const server = startServer(database.url, port)
    let stats: RunStats
    let organization: Organization
    try {
      await waitForHealth(server, baseUrl)
      console.log(`warming up for ${WARM_UP_SECONDS} s, then measuring for ${DURATION_SECONDS} s\n`)
      // The warm-up gets its own organization so the row check covers only the measured run.
      await runLoad(baseUrl, await createOrganization(baseUrl, 'bench-warm-up'), WARM_UP_SECONDS)
      organization = await createOrganization(baseUrl, 'bench')
      stats = await runLoad(baseUrl, organization, DURATION_SECONDS)
    } finally {
      await stopServer(server)
    }
    printTable(stats)
    return reportRowCheck(stats, await countRows(database.url, organization.id, stats)) ? 0 : 1
  } finally {
    await database.stop()
  }
}

// An explicit exit: embedded-postgres's exit hook would otherwise end the process with code 0.
process.exit(await main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error)
  return 1
}))
