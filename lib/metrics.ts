import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client'
import type { Pool } from 'pg'
import { deliveryQueueState, type DeliveryQueueState } from '../db/deliveries.js'
import type { Tier } from '../schemas/keys.js'
import type { EventArrivals } from './wake-ups/event-arrivals.js'
import type { WakeUpListener } from './wake-ups/listener.js'
import type { AttemptObserver } from './webhooks/delivery-worker.js'

/**
 * Pending deliveries counted exactly per scrape; beyond this the count is PostgreSQL's estimate. Reading 10 000
 * index entries costs milliseconds (a few hundred at worst, on a fresh backlog not yet vacuumed), whatever the backlog.
 */
export const QUEUE_DEPTH_EXACT_LIMIT = 10_000

export type IngestLabel = 'accepted' | 'duplicate' | 'rejected'
/** The tier label of requests limited per client address (no valid API key). */
export const ANONYMOUS_TIER = 'anonymous'
export type LimitedTier = Tier | typeof ANONYMOUS_TIER

// Seconds. Requests: from a cached 404 to long polls (wait_seconds up to 30) and streams (+Inf).
const REQUEST_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]
// Seconds from queueing to the 2xx: most within milliseconds, retries after minutes or hours.
const DELIVERY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 7200, 36000]
// Events per shared INSERT: up to INGEST_GROUP_MAX_EVENTS (at most 10 000).
const GROUP_SIZE_BUCKETS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]

export interface MetricSources {
  pool: Pool
  wakeUps: Pick<WakeUpListener, 'connected'>
  /** Where a failed queue query is reported; the scrape still answers, with NaN in the queue gauges. */
  log: { warn: (details: object, message: string) => void }
}

/** The API process's sources: also its long polls and streams waiting for arrivals. */
export interface ApiMetricSources extends MetricSources {
  wakeUps: Pick<WakeUpListener, 'connected'> & Pick<EventArrivals, 'waiting'>
}

/** Records one answered request of one route; built once per route so recording is two map lookups. */
export type RequestRecorder = (method: string, statusCode: number, seconds: number) => void

let processRegistry: Registry | undefined

/** A counter's series shown at 0 from the start, so rates and alerts work before the first event. */
function zeroed (counter: Counter.Internal): Counter.Internal {
  counter.inc(0)
  return counter
}

/**
 * Node's and the process's own metrics (memory, CPU, event-loop lag, GC, handles), collected once per process
 * and shared by every registry: each collector starts observers that live as long as the process, so a second
 * set per app (tests build many) would only add more of them.
 */
function processMetrics (): Registry {
  if (processRegistry === undefined) {
    processRegistry = new Registry()
    collectDefaultMetrics({ register: processRegistry })
  }
  return processRegistry
}

/**
 * Reads the delivery queue at most once per scrape: both queue gauges collect from the same read (a scrape
 * collects every metric at once; concurrent scrapes share it too).
 */
function queueReader (sources: MetricSources): () => Promise<DeliveryQueueState | undefined> {
  let reading: Promise<DeliveryQueueState | undefined> | undefined
  return () => {
    reading ??= deliveryQueueState(sources.pool, QUEUE_DEPTH_EXACT_LIMIT)
      .catch((error: unknown) => {
        sources.log.warn({ err: error }, 'metrics: could not read the delivery queue')
        return undefined
      })
      .finally(() => { reading = undefined })
    return reading
  }
}

/**
 * The metrics every process has (the API and the separate worker): process and Node defaults, the pool, the
 * listener, the delivery queue and the webhook attempts of this process's delivery worker. One registry per
 * instance, so many apps in one process (tests) never collide over a global registry.
 */
export class WorkerMetrics {
  readonly registry: Registry
  /** Give to the delivery worker: counts each attempt and, for a 2xx, the time since its delivery was queued. */
  readonly observeAttempt: AttemptObserver

  constructor (sources: MetricSources) {
    // A registry of this instance's own that starts with the process's shared metrics.
    this.registry = Registry.merge([processMetrics()])
    const registers = [this.registry]
    const readQueue = queueReader(sources)

    new Gauge({
      name: 'triggers_db_pool_connections',
      help: 'Database pool: connections open (total), open and not checked out (idle), queries waiting for one (waiting)',
      labelNames: ['state'] as const,
      registers,
      collect () {
        this.set({ state: 'total' }, sources.pool.totalCount)
        this.set({ state: 'idle' }, sources.pool.idleCount)
        this.set({ state: 'waiting' }, sources.pool.waitingCount)
      }
    })
    new Gauge({
      name: 'triggers_listener_connected',
      help: '1 while the LISTEN connection (wake-ups, key cache invalidation) is up, else 0',
      registers,
      collect () { this.set(sources.wakeUps.connected ? 1 : 0) }
    })
    new Gauge({
      name: 'triggers_webhook_queue_depth',
      help: `Pending deliveries of enabled endpoints in the database (exact up to ${QUEUE_DEPTH_EXACT_LIMIT}, estimated beyond)`,
      registers,
      async collect () { this.set((await readQueue())?.pending ?? Number.NaN) }
    })
    new Gauge({
      name: 'triggers_webhook_oldest_pending_seconds',
      help: 'Age of the oldest due pending delivery of an enabled endpoint, in seconds (0 when none is due)',
      registers,
      async collect () { this.set((await readQueue())?.oldestDueSeconds ?? Number.NaN) }
    })

    const attempts = new Counter({
      name: 'triggers_webhook_attempts_total',
      help: 'Webhook delivery attempts sent by this process: succeeded (2xx), failed (any other answer or error), timeout',
      labelNames: ['outcome'] as const,
      registers
    })
    const succeeded = zeroed(attempts.labels('succeeded'))
    const failed = zeroed(attempts.labels('failed'))
    const timedOut = zeroed(attempts.labels('timeout'))
    const latency = new Histogram({
      name: 'triggers_webhook_delivery_latency_seconds',
      help: 'From a delivery being queued (its event committed, or a redelivery requested) to its 2xx, retries included',
      buckets: DELIVERY_BUCKETS,
      registers
    })
    this.observeAttempt = (outcome, queuedAt) => {
      if (outcome.succeeded) {
        succeeded.inc()
        // Clocks of the database and this process may differ slightly: never a negative latency.
        latency.observe(Math.max(0, (Date.now() - queuedAt.getTime()) / 1000))
      } else if (outcome.timedOut) {
        timedOut.inc()
      } else {
        failed.inc()
      }
    }
  }

  /** The Prometheus text exposition of every metric. */
  async scrape (): Promise<string> {
    return this.registry.metrics()
  }

  get contentType (): string {
    return this.registry.contentType
  }
}

/** Everything a worker has, plus requests, ingest and rate limiting (the API process). */
export class ApiMetrics extends WorkerMetrics {
  private readonly requests: Histogram<'method' | 'route' | 'status_code'>
  private readonly ingested: Record<IngestLabel, Counter.Internal>
  private readonly groupSizes: Histogram
  private readonly rateLimited: Record<LimitedTier, Counter.Internal>
  private readonly shed: Counter.Internal

  constructor (sources: ApiMetricSources) {
    super(sources)
    const registers = [this.registry]
    new Gauge({
      name: 'triggers_inbox_waiting',
      help: 'Long polls waiting for events and event streams open in this process (each subscribed to arrivals)',
      registers,
      collect () { this.set(sources.wakeUps.waiting) }
    })
    this.requests = new Histogram({
      name: 'http_request_duration_seconds',
      help: 'HTTP requests answered, by method, route pattern (unmatched for unknown routes) and status code',
      labelNames: ['method', 'route', 'status_code'] as const,
      buckets: REQUEST_BUCKETS,
      registers
    })
    const ingested = new Counter({
      name: 'triggers_events_ingested_total',
      help: 'Events sent by producers: accepted (stored), duplicate (a known dedup_id), rejected (refused for its content)',
      labelNames: ['outcome'] as const,
      registers
    })
    this.ingested = { accepted: zeroed(ingested.labels('accepted')), duplicate: zeroed(ingested.labels('duplicate')), rejected: zeroed(ingested.labels('rejected')) }
    this.groupSizes = new Histogram({
      name: 'triggers_ingest_group_size',
      help: 'Events per group-commit INSERT (one statement, one commit)',
      buckets: GROUP_SIZE_BUCKETS,
      registers
    })
    const rateLimited = new Counter({
      name: 'triggers_rate_limited_total',
      help: `Requests refused with 429 rate_limited, by tier (${ANONYMOUS_TIER}: limited per client address, without a valid key)`,
      labelNames: ['tier'] as const,
      registers
    })
    const tier = (name: LimitedTier) => zeroed(rateLimited.labels(name))
    this.rateLimited = {
      free: tier('free'), starter: tier('starter'), professional: tier('professional'), enterprise: tier('enterprise'), anonymous: tier(ANONYMOUS_TIER)
    }
    this.shed = zeroed(new Counter({
      name: 'triggers_requests_shed_total',
      help: 'Requests refused with 503 overloaded because event-loop delay or memory was over its OVERLOAD_* bound',
      registers
    }))
  }

  /** A recorder for one route pattern; label sets are looked up once per method and status, then reused. */
  requestRecorder (route: string): RequestRecorder {
    const byMethod = new Map<string, Map<number, Histogram.Internal<'method' | 'route' | 'status_code'>>>()
    return (method, statusCode, seconds) => {
      let byStatus = byMethod.get(method)
      if (byStatus === undefined) byMethod.set(method, byStatus = new Map())
      let child = byStatus.get(statusCode)
      if (child === undefined) byStatus.set(statusCode, child = this.requests.labels(method, route, String(statusCode)))
      child.observe(seconds)
    }
  }

  countIngested (outcome: IngestLabel, events = 1): void {
    if (events > 0) this.ingested[outcome].inc(events)
  }

  observeGroupSize (events: number): void {
    this.groupSizes.observe(events)
  }

  countRateLimited (tier: LimitedTier): void {
    this.rateLimited[tier].inc()
  }

  countShed (): void {
    this.shed.inc()
  }
}
