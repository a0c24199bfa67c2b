import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { createInterface } from 'node:readline'
import pg from 'pg'
import pino from 'pino'
import { isAlive, portInUse } from '../../db/embedded-postgres.js'
import { freePort } from '../support/free-port.js'
import { loggerOptions, serializeError } from '../../lib/logging.js'
import type { Teardown } from '../support/helpers.js'
import { waitFor } from '../support/webhooks.js'

// Multi-process tests run the production build (dist/), which `npm test` builds first.

const databaseUrl = process.env.DATABASE_URL
if (!databaseUrl) throw new Error('DATABASE_URL is not set: run the suite with `npm test`, which provides one')
/** The server itself when the suite runs through PgBouncer (.ci/pgbouncer.sh), which hides sessions' ends from clients. */
const directUrl = process.env.DATABASE_DIRECT_URL ?? databaseUrl
/** The suite's database as the service is given it: the pooler's URL with the direct one beside it, if any. */
const serviceDatabase: Record<string, string> = { DATABASE_URL: databaseUrl, ...(directUrl === databaseUrl ? {} : { DATABASE_DIRECT_URL: directUrl }) }

interface Service {
  /** The spawned process (node, or npm), leader of its own process group. */
  child: ChildProcess
  /** The process that logs, i.e. node dist/server.js (the same as child unless started through npm). */
  serverPid: number
  url: string
  log: string[]
  exited: Promise<number | null>
}

const EMPTY_LEASE = { lease_id: null, leased_until: null, events: [] }

/**
 * Starts `command` in a process group of its own (so the test can signal the group, like Ctrl-C does) with the
 * service's settings, and waits for "Server listening". Killed, group and all, when the test ends.
 */
async function startService (t: Teardown, command: string, args: string[], env: Record<string, string>): Promise<Service> {
  const { DATABASE_URL: _unset, DATABASE_DIRECT_URL: _unsetDirect, ...inherited } = process.env
  const child = spawn(command, args, {
    detached: true,
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...inherited, HOST: '127.0.0.1', PORT: '0', LOG_LEVEL: 'info', WEBHOOK_WORKER: 'off', ...env }
  })
  const exited = once(child, 'exit').then(([code]) => code as number | null)
  t.teardown(() => { if (child.exitCode === null && child.signalCode === null) killGroup(child, 'SIGKILL') })
  const log: string[] = []
  const listening = new Promise<{ url: string, pid: number }>((resolve, reject) => {
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
      log.push(line)
      const entry = parseLine(line)
      const url = /^Server listening at (http:\/\/127\.0\.0\.1:\d+)$/.exec(String(entry?.msg))?.[1]
      if (url !== undefined && typeof entry?.pid === 'number') resolve({ url, pid: entry.pid })
    })
    void exited.then((code) => reject(new Error(`${command} exited with ${code} before listening:\n${log.join('\n')}`)))
  })
  const { url, pid } = await listening
  return { child, serverPid: pid, url, log, exited }
}

function parseLine (line: string): Record<string, unknown> | undefined {
  try {
    return JSON.parse(line) as Record<string, unknown>
  } catch {
    return undefined // npm's banner
  }
}

function killGroup (child: ChildProcess, signal: NodeJS.Signals): void {
  try {
    process.kill(-(child.pid as number), signal)
  } catch {
    // already gone
  }
}

/**
 * Creates an organization and starts a long poll, returning once the poll is waiting (it holds no connection).
 * Wrapped in an object: an async function returning the promise itself would wait for the answer.
 */
async function waitingLongPoll (service: Service): Promise<{ answer: Promise<{ status: number, body: unknown }> }> {
  const created = await fetch(`${service.url}/api/keys/generate`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ organization_name: 'shutdown-test' })
  })
  const { api_key: key } = await created.json() as { api_key: string }
  const answer = fetch(`${service.url}/api/inbox/lease`, {
    method: 'POST', headers: { 'x-api-key': key, 'content-type': 'application/json' }, body: JSON.stringify({ wait_seconds: 20 })
  }).then(async (response) => ({ status: response.status, body: await response.json() as unknown }))
  // The poll subscribes to arrivals, then makes its first (empty) lease attempt on a pool client: it waits once
  // the service counts one waiter and has no client checked out.
  await waitFor('the long poll to wait', async () => await waitingInService(service) === 1 && await poolSettled(service))
  return { answer }
}

/** The service's own count of waiting long polls and open streams (its triggers_inbox_waiting gauge). */
async function waitingInService (service: Service): Promise<number | undefined> {
  const text = await (await fetch(`${service.url}/metrics`)).text()
  const line = text.split('\n').find((candidate) => candidate.startsWith('triggers_inbox_waiting '))
  return line === undefined ? undefined : Number(line.split(' ')[1])
}

/** Whether the service's pool has no client checked out (its readiness answer's pool totals). */
async function poolSettled (service: Service): Promise<boolean> {
  const { pool } = await (await fetch(`${service.url}/health/ready`)).json() as { pool: { total: number, idle: number } }
  return pool.total === pool.idle
}

t.test('embedded PostgreSQL: the app closes first, then the service stops the database', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'triggers-shutdown-'))
  // As root the server runs as the postgres user, which must be able to reach the data directory.
  await chmod(dir, 0o755)
  const dataDir = path.join(dir, 'pgdata')
  const pgPort = await freePort()
  t.teardown(async () => {
    // A failed run may leave the (detached) PostgreSQL running: stop it before removing its folder.
    const pid = Number((await readFile(path.join(dataDir, 'postmaster.pid'), 'utf8').catch(() => '')).split('\n')[0])
    if (pid > 0 && isAlive(pid)) process.kill(pid, 'SIGKILL')
    await rm(dir, { recursive: true, force: true })
  })
  const env = { EMBEDDED_POSTGRES_DIR: dataDir, EMBEDDED_POSTGRES_PORT: String(pgPort) }

  const stopWith = async (signal: NodeJS.Signals, toGroup: boolean) => {
    const service = await startService(t, process.execPath, ['dist/server.js'], env)
    const { answer } = await waitingLongPoll(service)
    if (toGroup) killGroup(service.child, signal)
    else service.child.kill(signal)
    return { service, poll: await answer, code: await service.exited, pgListening: await portInUse(pgPort) }
  }

  // A process manager's SIGTERM, then Ctrl-C in a terminal (SIGINT to the whole foreground process group, which
  // PostgreSQL must not be part of) on the same data folder.
  for (const [signal, toGroup, name] of [['SIGTERM', false, 'SIGTERM'], ['SIGINT', true, 'Ctrl-C']] as const) {
    const { service, poll, code, pgListening } = await stopWith(signal, toGroup)
    t.same(poll, { status: 200, body: EMPTY_LEASE }, `${name}: the waiting long poll gets its empty answer`)
    t.equal(code, 0, `${name}: the service exits 0`)
    t.notOk(pgListening, `${name}: PostgreSQL has stopped`)
    t.ok(service.log.every((line) => line.length < 1000), `${name}: every log line is short`)
  }
})

t.test('npm start: the service stops on signals to npm, leaving no process behind', async (t) => {
  const cases = [
    { name: 'SIGTERM to npm (a process manager)', signal: 'SIGTERM', toGroup: false },
    { name: 'SIGINT to npm', signal: 'SIGINT', toGroup: false },
    // npm relays the SIGINT the server has already received from the terminal: one shutdown, not a forced exit.
    { name: 'Ctrl-C (SIGINT to the process group)', signal: 'SIGINT', toGroup: true }
  ] as const
  for (const { name, signal, toGroup } of cases) {
    // The build has run already: --ignore-scripts skips "prestart" and runs "start" as `npm start` does.
    const service = await startService(t, 'npm', ['start', '--ignore-scripts'], serviceDatabase)
    if (toGroup) killGroup(service.child, signal)
    else service.child.kill(signal)
    t.equal(await service.exited, 0, `${name}: npm exits 0`)
    t.notOk(isAlive(service.serverPid), `${name}: the server process (pid ${service.serverPid}) is gone`)
    t.equal(service.log.filter((line) => line.includes('"msg":"shutting down"')).length, 1, `${name}: one shutdown`)
    t.notMatch(service.log.join('\n'), /second signal/, `${name}: not forced`)
  }
})

t.test('an error carrying its pg client is logged as one short line', async (t) => {
  const pool = new pg.Pool({ connectionString: directUrl, max: 1 })
  t.teardown(() => pool.end())
  const failed = once(pool, 'error') as Promise<[Error]>
  const client = await pool.connect()
  const { rows } = await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')
  client.release()
  // Cut the idle client's connection from another one: pg puts the client on the error it emits.
  const killer = new pg.Client({ connectionString: directUrl })
  await killer.connect()
  await killer.query('SELECT pg_terminate_backend($1)', [rows[0]?.pid])
  await killer.end()
  const [error] = await failed
  t.ok('client' in error, 'the error carries the client')

  const logLine = (options: pino.LoggerOptions) => {
    const lines: string[] = []
    pino(options, { write: (line: string) => lines.push(line) }).warn({ err: error }, 'database connection failed')
    return lines[0] ?? ''
  }
  const standard = logLine({})
  const line = logLine(loggerOptions('info'))
  t.ok(standard.length > 2000, `pino's own serializer writes the client (${standard.length} characters)`)
  t.ok(line.length < 600, `ours writes ${line.length} characters`)
  const { err } = JSON.parse(line) as { err: Record<string, unknown> }
  t.same(Object.keys(err).sort(), ['code', 'message', 'stack', 'type'])
  t.match(err, { type: 'DatabaseError', message: 'terminating connection due to administrator command', code: '57P01' })
  t.equal(String(err.stack).split('\n').length, 3, 'three frames')
  t.ok(logLine(loggerOptions('debug')).length > line.length, 'debug keeps the whole stack')
})

t.test('the error serializer keeps causes, aggregated messages and non-errors', async (t) => {
  const refused = new AggregateError([new Error('connect ECONNREFUSED ::1:5432'), new Error('connect ECONNREFUSED 127.0.0.1:5432')])
  t.match(serializeError(refused), { type: 'AggregateError', message: 'connect ECONNREFUSED ::1:5432; connect ECONNREFUSED 127.0.0.1:5432' })
  t.match(serializeError(new Error('migration failed', { cause: new Error('lock timeout') })), { message: 'migration failed: lock timeout' })
  t.same(serializeError('plain text'), { type: 'string', message: 'plain text', stack: '' })
})
