import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdirSync, openSync, closeSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { freePort } from '../test/support/free-port.js'

const SERVER_SCRIPT = fileURLToPath(new URL('../server.js', import.meta.url))
const WORKER_SCRIPT = fileURLToPath(new URL('../worker.js', import.meta.url))
/** The last worker's log (the server's goes to /dev/null); where to look when a worker exits early. */
export const WORKER_LOG = '.data/bench-worker.log'
const CLUSTER_LOG = '.data/bench-cluster.log'
const ALL_LISTENING = 'all API processes listening'
// Long enough for a cluster's primary to migrate and start its children on a busy machine.
const HEALTH_TIMEOUT_MS = 90_000
const STOP_TIMEOUT_MS = 15_000
const RSS_SAMPLE_MS = 250

/** Anything whose resident set size can be sampled. */
export interface RssSource {
  /** Resident set size in MB, or undefined where /proc is not available. */
  rssMb: () => Promise<number | undefined>
}

export interface BenchProcess extends RssSource {
  /** False once the process has exited. */
  running: () => boolean
  stop: () => Promise<void>
}

export interface BenchServer extends BenchProcess {
  baseUrl: string
}

export interface ServerOptions {
  databaseUrl: string
  /** Settings for the process on top of the bench's own environment. */
  env: Record<string, string>
  /** When set, the server writes a V8 CPU profile into this folder when it exits. */
  cpuProfileDir?: string
  /**
   * WEB_CONCURRENCY > 1: /health answers once the first child listens, so the server's log goes to
   * CLUSTER_LOG instead of /dev/null and start-up waits for the primary's "all API processes listening".
   */
  cluster?: boolean
}

function benchProcess (child: ChildProcess): BenchProcess {
  return {
    rssMb: () => readRssMb(child.pid),
    running: () => child.exitCode === null && child.signalCode === null,
    stop: () => stopChild(child)
  }
}

/**
 * Starts the production build (dist/server.js) on a free port (PORT=0 would hide it from us; the tiny race
 * is accepted) and waits for /health. Its log goes to /dev/null: serializing it still costs what it costs.
 */
export async function startServer (options: ServerOptions): Promise<BenchServer> {
  const port = await freePort()
  const baseUrl = `http://127.0.0.1:${port}`
  const profiling = options.cpuProfileDir === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${options.cpuProfileDir}`]
  const log = options.cluster === true ? openLog(CLUSTER_LOG) : 'ignore'
  const child = spawn(process.execPath, [...profiling, SERVER_SCRIPT], {
    stdio: ['ignore', log, 'inherit'],
    env: { ...process.env, ...options.env, DATABASE_URL: options.databaseUrl, HOST: '127.0.0.1', PORT: String(port) }
  })
  if (typeof log === 'number') closeSync(log)
  const server = { ...benchProcess(child), baseUrl }
  try {
    await waitForHealth(server)
    if (options.cluster === true) await waitForLine(server, CLUSTER_LOG, ALL_LISTENING)
  } catch (error) {
    await server.stop()
    throw error
  }
  return server
}

/**
 * Starts the delivery worker of the production build (dist/worker.js) as its own process, so its RSS is its
 * own. It needs no readiness signal: the scenarios time deliveries from the first one that arrives.
 */
export function startWorker (options: ServerOptions): BenchProcess {
  const log = openLog(WORKER_LOG)
  try {
    const child = spawn(process.execPath, [WORKER_SCRIPT], {
      stdio: ['ignore', log, 'inherit'],
      env: { ...process.env, ...options.env, DATABASE_URL: options.databaseUrl }
    })
    return benchProcess(child)
  } finally {
    // The child has its own copy of the descriptor.
    closeSync(log)
  }
}

function openLog (file: string): number {
  mkdirSync(path.dirname(file), { recursive: true })
  return openSync(file, 'w')
}

async function waitForLine (server: BenchServer, file: string, message: string): Promise<void> {
  const deadline = Date.now() + HEALTH_TIMEOUT_MS
  while (!(await readFile(file, 'utf8').catch(() => '')).includes(`"msg":"${message}"`)) {
    if (!server.running() || Date.now() > deadline) throw new Error(`dist/server.js did not log "${message}" in time (see ${file})`)
    await sleep(200)
  }
}

async function waitForHealth (server: BenchServer): Promise<void> {
  const deadline = Date.now() + HEALTH_TIMEOUT_MS
  while (Date.now() < deadline) {
    if (!server.running()) throw new Error('dist/server.js exited before answering /health')
    const status = await fetch(`${server.baseUrl}/health`, { signal: AbortSignal.timeout(1000) }).then((response) => response.status, () => 0)
    if (status === 200) return
    await sleep(200)
  }
  throw new Error(`dist/server.js did not answer GET ${server.baseUrl}/health with 200 within ${HEALTH_TIMEOUT_MS / 1000} s`)
}

/** SIGTERM lets the process close gracefully (and write its CPU profile); SIGKILL only if it hangs. */
async function stopChild (child: ChildProcess): Promise<void> {
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

async function readRssMb (pid: number | undefined): Promise<number | undefined> {
  if (pid === undefined) return undefined
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '')
  const kilobytes = /^VmRSS:\s+(\d+)\s+kB/m.exec(status)?.[1]
  return kilobytes === undefined ? undefined : Number(kilobytes) / 1024
}

/** Samples a process's RSS while `work` runs; returns its result with the samples (MB, in order). */
export async function sampleRss<T> (source: RssSource, work: () => Promise<T>, intervalMs = RSS_SAMPLE_MS): Promise<{ result: T, rssSamples: number[] }> {
  const rssSamples: number[] = []
  const sample = async () => {
    const rss = await source.rssMb()
    if (rss !== undefined) rssSamples.push(rss)
  }
  await sample()
  const timer = setInterval(() => { void sample() }, intervalMs)
  try {
    return { result: await work(), rssSamples }
  } finally {
    clearInterval(timer)
    await sample()
  }
}

/** The largest sample, or undefined when there are none (no /proc). */
export function peakMb (samples: number[]): number | undefined {
  return samples.length === 0 ? undefined : Math.max(...samples)
}
