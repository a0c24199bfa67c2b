import envSchema from 'env-schema'
import ipaddr from 'ipaddr.js'
import { isIP } from 'node:net'
import { Type, type Static } from 'typebox'
import { parseSecretKeys } from './webhooks/secret-box.js'

const perMinute = (defaultLimit: number, description: string) =>
  Type.Integer({ minimum: 0, default: defaultLimit, description: `${description} (0 = unlimited)` })

export const ConfigSchema = Type.Object({
  PORT: Type.Integer({ minimum: 0, maximum: 65535, default: 3000 }),
  HOST: Type.String({ minLength: 1, default: '127.0.0.1' }),
  REQUEST_TIMEOUT_MS: Type.Integer({ minimum: 100, maximum: 600000, default: 30000, description: 'longest a client may take to send a whole request, headers and body; then 408 and the connection is closed' }),
  REQUEST_HEADERS_TIMEOUT_MS: Type.Integer({ minimum: 100, maximum: 600000, default: 10000, description: 'longest a client may take to send a request\'s headers (at most REQUEST_TIMEOUT_MS)' }),
  LOG_LEVEL: Type.Enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], { default: 'info' }),
  DATABASE_URL: Type.Optional(Type.String({ pattern: '^postgres(ql)?://' })),
  DATABASE_POOL_MAX: Type.Integer({ minimum: 1, maximum: 1000, default: 20 }),
  DATABASE_CONNECT_TIMEOUT_MS: Type.Integer({ minimum: 100, default: 5000 }),
  DATABASE_STATEMENT_TIMEOUT_MS: Type.Integer({ minimum: 0, default: 30000, description: 'longest one statement of the pool may run (0 = no limit)' }),
  EMBEDDED_POSTGRES_DIR: Type.String({ minLength: 1, default: '.data/postgres' }),
  EMBEDDED_POSTGRES_PORT: Type.Integer({ minimum: 1, maximum: 65535, default: 54329 }),
  REDIS_URL: Type.Optional(Type.String({ pattern: '^rediss?://' })),
  REDIS_KEY_PREFIX: Type.String({ minLength: 1, default: 'triggers:rate-limit:' }),
  ADMIN_TOKEN: Type.Optional(Type.String({ minLength: 16 })),
  ALLOW_OPEN_KEY_CREATION: Type.Boolean({ default: false, description: 'lets a server reachable from outside start without ADMIN_TOKEN (demos only)' }),
  STATS_TOKEN: Type.Optional(Type.String({ minLength: 16, description: 'when set, /stats/* need Authorization: Bearer <STATS_TOKEN>' })),
  RATE_LIMIT_FREE: perMinute(100, 'requests per minute for the free tier'),
  RATE_LIMIT_STARTER: perMinute(1000, 'requests per minute for the starter tier'),
  RATE_LIMIT_PROFESSIONAL: perMinute(5000, 'requests per minute for the professional tier'),
  RATE_LIMIT_ENTERPRISE: perMinute(10000, 'requests per minute for the enterprise tier'),
  RATE_LIMIT_ANONYMOUS: perMinute(1000, 'requests per minute per IP without a valid API key'),
  RATE_LIMIT_IPV6_PREFIX: Type.Integer({ minimum: 1, maximum: 128, default: 64, description: 'IPv6 clients share one per-IP budget per prefix of this length' }),
  API_KEY_CACHE_SIZE: Type.Integer({ minimum: 1, default: 10000, description: 'organizations kept in memory by API key' }),
  API_KEY_CACHE_TTL_SECONDS: Type.Integer({ minimum: 0, maximum: 86400, default: 60, description: 'longest a cached key is trusted (0 = no cache)' }),
  API_KEY_NEGATIVE_CACHE_SECONDS: Type.Integer({ minimum: 0, maximum: 3600, default: 10, description: 'how long an unknown key is answered without a lookup (0 = off)' }),
  DEDUP_CACHE_SIZE: Type.Integer({ minimum: 1, default: 100000 }),
  PAYLOAD_MAX_DEPTH: Type.Integer({ minimum: 1, maximum: 1000, default: 64, description: 'deepest nesting of objects and arrays in an event payload' }),
  INGEST_GROUP_WAIT_MS: Type.Integer({ minimum: 0, maximum: 100, default: 0, description: 'longest an event waits for others to share its commit (0 = those arriving together)' }),
  INGEST_GROUP_MAX_EVENTS: Type.Integer({ minimum: 1, maximum: 10000, default: 1000, description: 'events per shared INSERT' }),
  INGEST_GROUP_CONCURRENCY: Type.Integer({ minimum: 1, maximum: 100, default: 2, description: 'shared INSERTs in flight at once (each holds a pool client)' }),
  INGEST_GROUP_MAX_BYTES: Type.Integer({ minimum: 1024, default: 8388608, description: 'serialized events per shared INSERT, in bytes (one write is never split)' }),
  INGEST_QUEUE_MAX_EVENTS: Type.Integer({ minimum: 1, default: 50000, description: 'events waiting for a group commit before new writes get 503 overloaded' }),
  INGEST_QUEUE_MAX_WAIT_MS: Type.Integer({ minimum: 0, maximum: 60000, default: 50, description: 'how long the oldest write may have waited for a group commit before new writes get 503 overloaded (0 = no limit; above INGEST_GROUP_WAIT_MS)' }),
  OVERLOAD_MAX_EVENT_LOOP_DELAY_MS: Type.Integer({ minimum: 0, maximum: 60000, default: 50, description: 'mean event-loop delay over a sample above which requests are shed with 503 overloaded (0 = off)' }),
  OVERLOAD_MAX_HEAP_USED_MB: Type.Integer({ minimum: 0, default: 0, description: 'V8 heap in use above which requests are shed (0 = off)' }),
  OVERLOAD_MAX_RSS_MB: Type.Integer({ minimum: 0, default: 0, description: 'resident memory above which requests are shed (0 = off; RSS shrinks slowly, so prefer the heap bound)' }),
  OVERLOAD_MAX_IN_FLIGHT: Type.Integer({ minimum: 0, maximum: 100000, default: 100, description: 'requests in progress at once (long polls and streams aside) beyond which new ones are shed (0 = no limit)' }),
  OVERLOAD_SAMPLE_INTERVAL_MS: Type.Integer({ minimum: 10, maximum: 10000, default: 100, description: 'how often event-loop delay and memory are sampled' }),
  OVERLOAD_RETRY_AFTER_SECONDS: Type.Integer({ minimum: 1, maximum: 3600, default: 1, description: 'Retry-After of a shed request' }),
  INGEST_ISOLATED_RETRY_CONCURRENCY: Type.Integer({ minimum: 1, maximum: 100, default: 2, description: 'writes of a refused group retried alone at once' }),
  INBOX_MAX_LEASES: Type.Integer({ minimum: 1, maximum: 1000, default: 5, description: 'leases without ack before an event is quarantined' }),
  INBOX_STREAM_HEARTBEAT_SECONDS: Type.Integer({ minimum: 1, maximum: 300, default: 15 }),
  INBOX_STREAMS_PER_ORGANIZATION: Type.Integer({ minimum: 1, maximum: 100000, default: 100, description: 'open event streams per organization, per process' }),
  INBOX_LONG_POLLS_PER_ORGANIZATION: Type.Integer({ minimum: 1, maximum: 100000, default: 100, description: 'waiting long polls per organization, per process' }),
  SUBSCRIPTIONS_PER_ORGANIZATION: Type.Integer({ minimum: 1, maximum: 100000, default: 50, description: 'subscriptions an organization may have' }),
  SUBSCRIPTION_REPLAYS_READING: Type.Integer({ minimum: 1, maximum: 100, default: 3, description: 'replays of one subscription still reading their range at once' }),
  SUBSCRIPTION_REPLAY_MAX_EVENTS: Type.Integer({ minimum: 1, maximum: 100000000, default: 1000000, description: 'events one replay may cover' }),
  WEBHOOKS_PER_ORGANIZATION: Type.Integer({ minimum: 1, maximum: 100000, default: 50, description: 'webhook endpoints an organization may register' }),
  WEBHOOK_WORKER: Type.Enum(['on', 'off'], { default: 'on', description: 'run the delivery worker inside the API process' }),
  WEBHOOK_TIMEOUT_MS: Type.Integer({ minimum: 100, maximum: 120000, default: 10000 }),
  WEBHOOK_RETRY_SCHEDULE: Type.String({ pattern: '^\\s*\\d+(\\s*,\\s*\\d+)*\\s*$', default: '0,5,300,1800,7200,18000,36000,36000', description: 'seconds before each attempt' }),
  WEBHOOK_ALLOW_PRIVATE_URLS: Type.Boolean({ default: false }),
  WEBHOOK_DISABLE_AFTER_FAILURES: Type.Integer({ minimum: 0, default: 5, description: 'consecutive exhausted deliveries before an endpoint is disabled (0 = never)' }),
  WEBHOOK_ENDPOINT_CONCURRENCY: Type.Integer({ minimum: 1, maximum: 1000, default: 16, description: 'sends in flight to one endpoint to start with, per worker; adapts to the receiver' }),
  WEBHOOK_ENDPOINT_MAX_CONCURRENCY: Type.Integer({ minimum: 1, maximum: 1000, default: 64, description: 'the most sends in flight to one endpoint, per worker' }),
  WEBHOOK_WORKER_CONCURRENCY: Type.Integer({ minimum: 1, maximum: 10000, default: 256, description: 'sends in flight per worker in total' }),
  WEBHOOK_CLAIM_SECONDS: Type.Integer({ minimum: 1, maximum: 3600, default: 60, description: 'how long a claimed delivery stays with its worker' }),
  WEBHOOK_POLL_INTERVAL_MS: Type.Integer({ minimum: 50, maximum: 60000, default: 1000 }),
  WEBHOOK_SECRET_OVERLAP_SECONDS: Type.Integer({ minimum: 0, default: 86400 }),
  WEBHOOK_SECRET_KEYS: Type.Optional(Type.String({ description: 'id:base64-key,... (AES-256); the first encrypts webhook secrets, all decrypt' })),
  TRUST_PROXY: Type.String({ minLength: 1, default: 'false', description: 'false, a hop count, or proxy addresses/CIDRs separated by commas' }),
  EVENT_RETENTION_DAYS: Type.Integer({ minimum: 0, maximum: 36500, default: 30, description: 'days events are kept, with their deliveries and attempts (0 = forever)' }),
  DELIVERY_ATTEMPT_RETENTION_DAYS: Type.Integer({ minimum: 0, maximum: 36500, default: 0, description: 'days delivery attempts are kept when shorter than EVENT_RETENTION_DAYS (0 = as long as events)' }),
  RETENTION_MAINTENANCE_INTERVAL_SECONDS: Type.Integer({ minimum: 10, maximum: 86400, default: 3600, description: 'how often partitions are created ahead and dropped behind' }),
  METRICS_TOKEN: Type.Optional(Type.String({ minLength: 16, description: 'when set, /metrics (API and worker) needs Authorization: Bearer <METRICS_TOKEN>' })),
  WORKER_METRICS_PORT: Type.Integer({ minimum: 0, maximum: 65535, default: 0, description: 'port of the separate worker\'s /metrics, on HOST (0 = none)' }),
  DATABASE_DIRECT_URL: Type.Optional(Type.String({ pattern: '^postgres(ql)?://', description: 'direct connection for LISTEN, migrations and advisory locks when DATABASE_URL is a pooler' })),
  DATABASE_PREPARED_STATEMENTS: Type.Boolean({ default: true, description: 'false: no named prepared statements (a transaction-mode pooler that does not keep them)' }),
  WEB_CONCURRENCY: Type.Integer({ minimum: 1, maximum: 256, default: 1, description: 'API processes sharing the port (node:cluster); DATABASE_POOL_MAX is split between them' })
})

export type Config = Static<typeof ConfigSchema>

export interface LoadOptions {
  /** False for processes that serve no HTTP (the worker, migrations): the open-key-creation check is theirs to skip. */
  listens?: boolean
}

/** Reads and validates settings; an invalid value throws an error that names the setting. */
export function loadConfig (env: NodeJS.ProcessEnv = process.env, { listens = true }: LoadOptions = {}): Config {
  const data = Object.fromEntries(Object.entries(env).filter(([, value]) => value !== ''))
  let config: Config
  try {
    config = envSchema<Config>({ schema: ConfigSchema, data, env: false, dotenv: false })
    trustProxyOption(config.TRUST_PROXY)
    parseSecretKeys(config.WEBHOOK_SECRET_KEYS)
    checkRetention(config)
    checkRequestTimeouts(config)
    checkQueueWait(config)
  } catch (error) {
    const detail = error instanceof Error ? error.message : String(error)
    throw new Error(`Invalid configuration: ${detail}`)
  }
  if (config.DATABASE_DIRECT_URL !== undefined && config.DATABASE_URL === undefined) {
    throw new Error('Invalid configuration: DATABASE_DIRECT_URL is the direct connection beside a pooler in DATABASE_URL; ' +
      'set DATABASE_URL too (without it the embedded PostgreSQL is used, and LISTEN and migrations would go elsewhere)')
  }
  if (config.DATABASE_POOL_MAX < config.WEB_CONCURRENCY) {
    throw new Error(`Invalid configuration: DATABASE_POOL_MAX (${config.DATABASE_POOL_MAX}) is the pool budget of all ` +
      `WEB_CONCURRENCY (${config.WEB_CONCURRENCY}) processes together and must give each at least one connection`)
  }
  if (listens) refuseOpenKeyCreation(config)
  return config
}

/** Attempts live in their event's partitions: they cannot be kept longer than their events. */
function checkRetention (config: Config): void {
  const events = config.EVENT_RETENTION_DAYS
  const attempts = config.DELIVERY_ATTEMPT_RETENTION_DAYS
  if (events > 0 && attempts > events) {
    throw new Error(`env/DELIVERY_ATTEMPT_RETENTION_DAYS (${attempts}) cannot exceed EVENT_RETENTION_DAYS (${events}): attempts expire with their events`)
  }
}

/** A write waits up to INGEST_GROUP_WAIT_MS on purpose: a queue bound within that would refuse every write. */
function checkQueueWait (config: Config): void {
  if (config.INGEST_QUEUE_MAX_WAIT_MS > 0 && config.INGEST_QUEUE_MAX_WAIT_MS <= config.INGEST_GROUP_WAIT_MS) {
    throw new Error(`env/INGEST_QUEUE_MAX_WAIT_MS (${config.INGEST_QUEUE_MAX_WAIT_MS}) must exceed INGEST_GROUP_WAIT_MS (${config.INGEST_GROUP_WAIT_MS}), or be 0`)
  }
}

/** Node refuses a headers timeout longer than the request timeout, which covers the headers too. */
function checkRequestTimeouts (config: Config): void {
  if (config.REQUEST_HEADERS_TIMEOUT_MS > config.REQUEST_TIMEOUT_MS) {
    throw new Error(`env/REQUEST_HEADERS_TIMEOUT_MS (${config.REQUEST_HEADERS_TIMEOUT_MS}) cannot exceed REQUEST_TIMEOUT_MS (${config.REQUEST_TIMEOUT_MS}), which includes the headers`)
  }
}

/** One process's share of DATABASE_POOL_MAX: the budget is for all WEB_CONCURRENCY processes together. */
export function processPoolMax (config: Pick<Config, 'DATABASE_POOL_MAX' | 'WEB_CONCURRENCY'>): number {
  return Math.floor(config.DATABASE_POOL_MAX / config.WEB_CONCURRENCY)
}

const LOOPBACK_NAMES = new Set(['localhost', 'ip6-localhost', 'ip6-loopback'])

/** Whether HOST only accepts connections from this machine. Any other name may resolve to anything: not loopback. */
function isLoopbackHost (host: string): boolean {
  const bare = host.replace(/^\[|\]$/g, '')
  if (LOOPBACK_NAMES.has(bare.toLowerCase())) return true
  return isIP(bare) !== 0 && ipaddr.process(bare).range() === 'loopback'
}

/**
 * Without ADMIN_TOKEN anyone who reaches the service can create organizations and keys; that is acceptable on
 * loopback (development) and nowhere else, unless the operator says so explicitly.
 */
function refuseOpenKeyCreation (config: Config): void {
  if (config.ADMIN_TOKEN !== undefined || config.ALLOW_OPEN_KEY_CREATION || isLoopbackHost(config.HOST)) return
  throw new Error(
    `Refusing to start: HOST=${config.HOST} accepts connections from other machines and ADMIN_TOKEN is not set, so ` +
    'anyone could create API keys. Set ADMIN_TOKEN (at least 16 characters; POST /api/keys/generate then requires it in ' +
    'X-Admin-Token), or set ALLOW_OPEN_KEY_CREATION=true for a demo.')
}

// Names proxy-addr (Fastify's trustProxy) understands besides addresses and CIDRs.
const PROXY_RANGE_NAMES = new Set(['loopback', 'linklocal', 'uniquelocal'])

function isProxyAddress (entry: string): boolean {
  if (PROXY_RANGE_NAMES.has(entry) || isIP(entry) !== 0) return true
  try {
    ipaddr.parseCIDR(entry)
    return true
  } catch {
    return false
  }
}

/**
 * Fastify's trustProxy from TRUST_PROXY: `false` or `0` (no proxy), a hop count n (the client is the address
 * the n-th proxy in front saw: safe only when nothing reaches the service except through those proxies), or
 * a list of proxy addresses/CIDRs (hops are trusted only from those, so a client that connects directly
 * cannot forge its address). `true` means one hop: trusting every hop would let any client choose its own address
 * with X-Forwarded-For. Hop counts become a function: Fastify 5 trusts no hop for a bare number.
 */
export function trustProxyOption (setting: string): false | string[] | ((address: string, hop: number) => boolean) {
  const value = setting.trim().toLowerCase()
  if (value === 'false') return false
  const hops = value === 'true' ? 1 : /^\d+$/.test(value) ? Number(value) : undefined
  if (hops !== undefined) return hops === 0 ? false : (_address, hop) => hop < hops
  const entries = value.split(',').map((entry) => entry.trim())
  const wrong = entries.find((entry) => !isProxyAddress(entry))
  if (wrong !== undefined) {
    throw new Error(`env/TRUST_PROXY must be false, a hop count, or proxy addresses/CIDRs separated by commas ("${wrong}" is none of these)`)
  }
  return entries
}
