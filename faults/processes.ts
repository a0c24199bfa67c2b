import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { closeSync, openSync } from 'node:fs'
import { readFile, stat } from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const DIST = fileURLToPath(new URL('..', import.meta.url))
export const SERVER_SCRIPT = path.join(DIST, 'server.js')
export const WORKER_SCRIPT = path.join(DIST, 'worker.js')

const STOP_TIMEOUT_MS = 10_000

export interface ExitRecord {
  code: number | null
  signal: NodeJS.Signals | null
  /** The suite killed or stopped it; anything else is a crash. */
  expected: boolean
  at: number
}

/** Every process the suite started, so that each exit path (failure, Ctrl-C) can end them all. */
const running = new Set<ManagedProcess>()

/**
 * One service process (`node dist/server.js` or `node dist/worker.js`) that the suite starts, kills and
 * restarts as a process manager would. Spawned with plain `node` so signals reach the service itself, with
 * its output appended to a log file that survives restarts (the evidence when something crashes).
 */
export class ManagedProcess {
  private child: ChildProcess | undefined
  private expectingExit = false
  readonly exits: ExitRecord[] = []

  constructor (readonly name: string, private readonly script: string, private readonly env: NodeJS.ProcessEnv, readonly logFile: string) {}

  start (): void {
    if (this.alive) throw new Error(`${this.name} is already running`)
    const log = openSync(this.logFile, 'a')
    try {
      const child = spawn(process.execPath, [this.script], { stdio: ['ignore', log, log], env: this.env })
      this.expectingExit = false
      child.once('exit', (code, signal) => {
        this.exits.push({ code, signal, expected: this.expectingExit, at: Date.now() })
        running.delete(this)
      })
      this.child = child
      running.add(this)
    } finally {
      // The child holds its own copy of the descriptor.
      closeSync(log)
    }
  }

  get alive (): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null
  }

  /** kill -9, as a crash or an OOM killer would; resolves once the process is gone. */
  async kill9 (): Promise<void> {
    await this.signalAndWait('SIGKILL')
  }

  /** SIGTERM for a graceful shutdown; SIGKILL if it has not exited after STOP_TIMEOUT_MS. */
  async stop (): Promise<void> {
    const timer = setTimeout(() => this.child?.kill('SIGKILL'), STOP_TIMEOUT_MS)
    try {
      await this.signalAndWait('SIGTERM')
    } finally {
      clearTimeout(timer)
    }
  }

  /** Synchronous, for process 'exit' handlers where nothing can be awaited. */
  killNow (): void {
    if (this.alive) this.child?.kill('SIGKILL')
  }

  /** Exits the suite did not cause, after `since` (ms since the epoch). */
  crashesSince (since: number): ExitRecord[] {
    return this.exits.filter((exit) => !exit.expected && exit.at >= since)
  }

  private async signalAndWait (signal: NodeJS.Signals): Promise<void> {
    const child = this.child
    if (child === undefined || !this.alive) return
    const exited = once(child, 'exit')
    this.expectingExit = true
    child.kill(signal)
    await exited
  }
}

export function killAllNow (): void {
  for (const managed of running) managed.killNow()
}

export async function stopAll (): Promise<void> {
  await Promise.all([...running].map((managed) => managed.stop()))
}

/** The log's size now: where the output of the next start begins. */
export async function logOffset (logFile: string): Promise<number> {
  return await stat(logFile).then((info) => info.size, () => 0)
}

export async function logSince (logFile: string, offset: number): Promise<string> {
  const text = await readFile(logFile, 'utf8').catch(() => '')
  return text.slice(offset)
}

interface LogEntry {
  level?: unknown
  msg?: unknown
  err?: { type?: unknown, message?: unknown, stack?: unknown }
}

/** One log line in a few words: message, error and where it was thrown; undefined when below error level. */
function summarize (line: string): { text: string, fatal: boolean } | undefined {
  let entry: LogEntry
  try {
    entry = JSON.parse(line) as LogEntry
  } catch {
    // Not pino: Node's own report of an uncaught exception. Its stack frames add nothing to the first line.
    return /^\s+at /.test(line) ? undefined : { text: line.trim(), fatal: true }
  }
  if (typeof entry.level !== 'number' || entry.level < 50) return undefined
  const frame = typeof entry.err?.stack === 'string' ? entry.err.stack.split('\n').find((part) => /^\s*at /.test(part))?.trim() : undefined
  const parts = [entry.msg, entry.err?.type, entry.err?.message].filter((part) => typeof part === 'string' && part !== '')
  return { text: `${parts.join(': ')}${frame === undefined ? '' : ` (${frame})`}`, fatal: entry.level >= 60 }
}

/**
 * The lines that explain a crash, from `offset` on: fatal lines and Node's uncaught-exception output first,
 * then the last distinct error lines (a restart also logs many failed requests, each the same), with counts.
 */
export async function errorLines (logFile: string, offset = 0, count = 4): Promise<string[]> {
  const seen = new Map<string, { fatal: boolean, times: number }>()
  for (const line of (await logSince(logFile, offset)).split('\n')) {
    const summary = line.trim() === '' ? undefined : summarize(line)
    if (summary === undefined) continue
    const previous = seen.get(summary.text)
    seen.delete(summary.text)
    seen.set(summary.text, { fatal: summary.fatal, times: (previous?.times ?? 0) + 1 })
  }
  const entries = [...seen].reverse()
  const chosen = [...entries.filter(([, entry]) => entry.fatal), ...entries.filter(([, entry]) => !entry.fatal)].slice(0, count)
  return chosen.map(([text, entry]) => `${entry.times > 1 ? `${entry.times}× ` : ''}${text.length > 300 ? `${text.slice(0, 300)}…` : text}`)
}
