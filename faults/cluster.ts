import path from 'node:path'
import { freePort } from '../test/support/free-port.js'
import { logOffset, logSince, ManagedProcess, SERVER_SCRIPT, WORKER_SCRIPT } from './processes.js'
import { waitUntil } from './wait.js'
import {
  ADMIN_TOKEN, CLAIM_SECONDS, databaseUrlFor, ENDPOINT_CONCURRENCY, POLL_INTERVAL_MS, POOL_MAX, REDIS_URL, RETRY_SCHEDULE, RUN_ID,
  WEBHOOK_TIMEOUT_MS
} from './settings.js'

const START_TIMEOUT_MS = 30_000
const WORKER_RUNNING = 'webhook worker running'

export interface ApiInstance {
  label: string
  baseUrl: string
  /** application_name of its database connections (pool and listener). */
  applicationName: string
  process: ManagedProcess
}

export interface Worker {
  applicationName: string
  process: ManagedProcess
}

export interface Cluster {
  apis: ApiInstance[]
  worker: Worker
}

/** Settings the instances and the worker share: loopback receivers allowed, an endpoint never disabled. */
function commonEnv (applicationName: string): NodeJS.ProcessEnv {
  return {
    ...process.env,
    DATABASE_URL: databaseUrlFor(applicationName),
    DATABASE_POOL_MAX: String(POOL_MAX),
    WEBHOOK_ALLOW_PRIVATE_URLS: 'true',
    // Disabling would leave the faulty endpoints' pending deliveries unclaimed, which is not what is tested.
    WEBHOOK_DISABLE_AFTER_FAILURES: '0'
  }
}

function apiEnv (applicationName: string, port: number): NodeJS.ProcessEnv {
  return {
    ...commonEnv(applicationName),
    HOST: '127.0.0.1',
    PORT: String(port),
    WEBHOOK_WORKER: 'off',
    REDIS_URL,
    REDIS_KEY_PREFIX: `faults:${RUN_ID}:`,
    LOG_LEVEL: 'warn',
    ADMIN_TOKEN,
    // The limiter runs (so Redis is in every request's path) but never refuses the load.
    RATE_LIMIT_ENTERPRISE: '1000000000',
    RATE_LIMIT_ANONYMOUS: '1000000000',
    // Load shedding is measured by the bench's overload scenario; here a 503 must mean a fault's outage, so a
    // sampled event-loop delay on a busy machine does not refuse the bounded load.
    OVERLOAD_MAX_EVENT_LOOP_DELAY_MS: '0',
    OVERLOAD_MAX_IN_FLIGHT: '0',
    // Likewise the ingest queue's age bound (50 ms by default): on a busy machine a group commit now and then
    // waits longer, and the load would get 503 overloaded in phases where nothing is down.
    INGEST_QUEUE_MAX_WAIT_MS: '0'
  }
}

function workerEnv (applicationName: string): NodeJS.ProcessEnv {
  return {
    ...commonEnv(applicationName),
    // info: the worker says when it is running, and logs little else.
    LOG_LEVEL: 'info',
    WEBHOOK_POLL_INTERVAL_MS: String(POLL_INTERVAL_MS),
    WEBHOOK_TIMEOUT_MS: String(WEBHOOK_TIMEOUT_MS),
    WEBHOOK_RETRY_SCHEDULE: RETRY_SCHEDULE.join(','),
    WEBHOOK_CLAIM_SECONDS: String(CLAIM_SECONDS),
    WEBHOOK_ENDPOINT_CONCURRENCY: String(ENDPOINT_CONCURRENCY),
    WEBHOOK_WORKER_CONCURRENCY: String(ENDPOINT_CONCURRENCY * 4)
  }
}

async function createApi (label: string, logDir: string): Promise<ApiInstance> {
  const port = await freePort()
  const applicationName = `faults-${RUN_ID}-api-${label.toLowerCase()}`
  const managed = new ManagedProcess(`API ${label}`, SERVER_SCRIPT, apiEnv(applicationName, port), path.join(logDir, `api-${label.toLowerCase()}.log`))
  return { label, baseUrl: `http://127.0.0.1:${port}`, applicationName, process: managed }
}

/** Two API instances and one worker, all started and ready; throws (naming the log) if one does not come up. */
export async function startCluster (logDir: string): Promise<Cluster> {
  const apis = [await createApi('A', logDir), await createApi('B', logDir)]
  const applicationName = `faults-${RUN_ID}-worker`
  const worker = { applicationName, process: new ManagedProcess('worker', WORKER_SCRIPT, workerEnv(applicationName), path.join(logDir, 'worker.log')) }
  const started = await Promise.all([...apis.map(startApi), startWorker(worker)])
  const failed = [...apis.map((api) => api.process), worker.process].filter((_, index) => started[index] === undefined)
  if (failed.length > 0) throw new Error(`did not start: ${failed.map((managed) => `${managed.name} (log ${managed.logFile})`).join(', ')}`)
  return { apis, worker }
}

/** Starts the instance and returns the seconds until /health/ready answered 200 (undefined: not in time). */
export async function startApi (api: ApiInstance): Promise<number | undefined> {
  const started = Date.now()
  api.process.start()
  return await waitReady(api, started, START_TIMEOUT_MS)
}

/** Seconds from `since` until the instance answers /health/ready 200; undefined if it dies or time runs out. */
export async function waitReady (api: ApiInstance, since: number, timeoutMs = START_TIMEOUT_MS): Promise<number | undefined> {
  const ready = await waitUntil(async () => !api.process.alive || await isReady(api), timeoutMs)
  return ready && api.process.alive ? (Date.now() - since) / 1000 : undefined
}

async function isReady (api: ApiInstance): Promise<boolean> {
  const response = await fetch(`${api.baseUrl}/health/ready`, { signal: AbortSignal.timeout(1000) }).catch(() => undefined)
  await response?.body?.cancel()
  return response?.status === 200
}

/** Starts the worker and returns the seconds until it logged that it runs (undefined: not in time). */
export async function startWorker (worker: Worker): Promise<number | undefined> {
  const started = Date.now()
  const offset = await logOffset(worker.process.logFile)
  worker.process.start()
  const running = await waitUntil(async () => !worker.process.alive || (await logSince(worker.process.logFile, offset)).includes(WORKER_RUNNING), START_TIMEOUT_MS)
  return running && worker.process.alive ? (Date.now() - started) / 1000 : undefined
}
