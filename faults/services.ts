import { execFile } from 'node:child_process'
import { readdir } from 'node:fs/promises'
import { promisify } from 'node:util'
import { waitUntil } from './wait.js'
import { REDIS_HOST, REDIS_PORT } from './settings.js'

/**
 * The machine's PostgreSQL and Redis, which the suite restarts. Commands run with a timeout so that a hung
 * service cannot hang the suite; each start waits until the service answers.
 */
const run = promisify(execFile)
const COMMAND_TIMEOUT_MS = 60_000
const SERVICE_WAIT_MS = 30_000
const PG_PORT = '5432'

async function command (file: string, args: string[]): Promise<void> {
  await run(file, args, { timeout: COMMAND_TIMEOUT_MS })
}

async function succeeds (file: string, args: string[]): Promise<boolean> {
  return await run(file, args, { timeout: 5000 }).then(() => true, () => false)
}

async function clusterVersion (): Promise<string> {
  const versions = await readdir('/etc/postgresql')
  const version = versions.sort().at(-1)
  if (version === undefined) throw new Error('no PostgreSQL cluster under /etc/postgresql')
  return version
}

async function pgCtl (action: 'start' | 'restart'): Promise<void> {
  await command('pg_ctlcluster', ['--skip-systemctl-redirect', await clusterVersion(), 'main', action])
}

async function postgresReady (): Promise<boolean> {
  return await succeeds('pg_isready', ['-q', '-h', '127.0.0.1', '-p', PG_PORT])
}

async function redisReady (): Promise<boolean> {
  return await run('redis-cli', ['-h', REDIS_HOST, '-p', String(REDIS_PORT), 'ping'], { timeout: 5000 })
    .then(({ stdout }) => stdout.trim() === 'PONG', () => false)
}

export async function startRedis (): Promise<void> {
  await command('redis-server', ['--daemonize', 'yes', '--bind', REDIS_HOST, '--port', String(REDIS_PORT), '--save', '', '--appendonly', 'no'])
  if (!await waitUntil(redisReady, SERVICE_WAIT_MS, 200)) throw new Error('Redis did not answer PING after start')
}

/** Restarts PostgreSQL (fast shutdown: every connection is cut) and waits until it accepts connections. */
export async function restartPostgres (): Promise<void> {
  await pgCtl('restart')
  if (!await waitUntil(postgresReady, SERVICE_WAIT_MS, 200)) throw new Error('PostgreSQL did not become ready after restart')
}

export async function stopRedis (): Promise<void> {
  await command('redis-cli', ['-h', REDIS_HOST, '-p', String(REDIS_PORT), 'shutdown', 'nosave'])
    // redis-cli reports the connection it loses to the shutdown as an error; what counts is that Redis is gone.
    .catch(() => {})
  if (!await waitUntil(async () => !await redisReady(), SERVICE_WAIT_MS, 200)) throw new Error('Redis still answers after shutdown')
}

/** Whatever happened (a failure mid-fault, Ctrl-C), PostgreSQL and Redis are left running. */
export async function ensureServices (): Promise<void> {
  if (!await postgresReady()) {
    await pgCtl('start').catch(() => {})
    if (!await waitUntil(postgresReady, SERVICE_WAIT_MS, 200)) throw new Error('PostgreSQL on 5432 is not running and could not be started')
  }
  if (!await redisReady()) await startRedis()
}
