import { checkDeliveries, waitForArrivals, waitForRecorded, type DeliveryCheck, type Hook } from './delivery-check.js'
import { queueEvents, sendFailures, sendPaced, type SentEvents } from './delivery-load.js'
import { addWebhook, createOrganization, type Organization } from './organizations.js'
import type { Receiver, ReceiverEndpoint } from './receiver.js'
import { SLOW_ENDPOINT_ROWS, type DeliveryResult } from './report.js'
import { peakMb, sampleRss, startWorker, type BenchProcess, type BenchServer } from './server.js'
import { percentiles } from './stats.js'

/** Scaled by BENCH_DURATION_SECONDS: 20 000 events at the default 10 s, 4 000 in CI's 2 s. */
const DRAIN_EVENTS_PER_SECOND = 2000
/** Scaled likewise: 2 000 events × 10 endpoints = 20 000 deliveries at 10 s. */
const FANOUT_EVENTS_PER_SECOND = 200
const FANOUT_ENDPOINTS = 10
/** Events per second of the paced scenarios. */
const PACED_RATE = 300
const SLOW_ANSWER_MS = 2000
/** The slow endpoint's attempts must not time out: its deliveries are checked like the others'. */
const SLOW_SCENARIO_MIN_TIMEOUT_MS = SLOW_ANSWER_MS + 3000

export const DELIVERY_SCENARIOS = ['delivery-drain', 'delivery-latency', 'delivery-fanout', 'delivery-slow-endpoint'] as const
export type DeliveryScenarioName = typeof DELIVERY_SCENARIOS[number]

export interface DeliveryContext {
  databaseUrl: string
  /** The API, run with WEBHOOK_WORKER=off: each scenario starts its own dist/worker.js. */
  server: BenchServer
  receiver: Receiver
  /** The worker's settings on top of the bench's environment. */
  workerEnv: Record<string, string>
  durationSeconds: number
  warmUpSeconds: number
  /** delivery-slow-endpoint's paced comparison is run this many times, alternating the order. */
  pacedRounds: number
}

interface EndpointSpec {
  name: string
  delayMs?: number
}

/** A scenario's organization, its webhooks (one receiver endpoint each) and the events it was sent. */
interface Phase {
  organization: Organization
  hooks: Hook[]
  sent: SentEvents
}

interface Peaks {
  workerPeakRssMb: number | undefined
  serverPeakRssMb: number | undefined
}

async function addHooks (context: DeliveryContext, organization: Organization, specs: EndpointSpec[]): Promise<Hook[]> {
  const hooks: Hook[] = []
  for (const spec of specs) {
    const endpoint = context.receiver.endpoint(spec.name)
    endpoint.delayMs = spec.delayMs ?? 0
    hooks.push({ webhookId: await addWebhook(context.server.baseUrl, organization, endpoint.url), endpoint })
  }
  return hooks
}

const endpointsOf = (hooks: Hook[]): ReceiverEndpoint[] => hooks.map((hook) => hook.endpoint)

/** Samples the server's and the worker's RSS while `work` runs. */
async function measure<T> (context: DeliveryContext, worker: BenchProcess, work: () => Promise<T>): Promise<{ result: T, peaks: Peaks }> {
  const { result: { result, rssSamples: workerSamples }, rssSamples: serverSamples } =
    await sampleRss(context.server, () => sampleRss(worker, work))
  return { result, peaks: { workerPeakRssMb: peakMb(workerSamples), serverPeakRssMb: peakMb(serverSamples) } }
}

export async function withWorker<T> (context: DeliveryContext, env: Record<string, string>, work: (worker: BenchProcess) => Promise<T>): Promise<T> {
  const worker = startWorker({ databaseUrl: context.databaseUrl, env: { ...context.workerEnv, ...env } })
  try {
    return await work(worker)
  } finally {
    await worker.stop()
  }
}

/** Deliveries per second from the first arrival to the last, over the given endpoints. */
export function throughput (endpoints: ReceiverEndpoint[]): { deliveries: number, perSecond: number } {
  const deliveries = endpoints.reduce((sum, endpoint) => sum + endpoint.deliveries, 0)
  const first = Math.min(...endpoints.map((endpoint) => endpoint.firstAtMs ?? Infinity))
  const last = Math.max(...endpoints.map((endpoint) => endpoint.lastAtMs ?? -Infinity))
  return { deliveries, perSecond: last > first ? deliveries / ((last - first) / 1000) : 0 }
}

/** Waits for the phase's deliveries to arrive and be recorded, then checks its rows. */
async function settleAndCheck (context: DeliveryContext, phase: Phase, worker: BenchProcess): Promise<DeliveryCheck> {
  const expected = phase.sent.acceptedIds.length
  const stopped = await waitForArrivals(endpointsOf(phase.hooks), expected, worker)
  if (stopped !== 'all arrived') console.log(`  waiting for deliveries: ${stopped}`)
  await waitForRecorded(context.databaseUrl, phase.organization.id, expected * phase.hooks.length)
  return await checkDeliveries(context.databaseUrl, phase.organization.id, phase.sent.acceptedIds, phase.hooks)
}

function result (name: string, phase: Phase, measured: Hook[], check: DeliveryCheck, peaks: Peaks, withLatency: boolean): DeliveryResult {
  const { deliveries, perSecond } = throughput(endpointsOf(measured))
  const latencies = endpointsOf(measured).flatMap((endpoint) => endpoint.latencies())
  const row: DeliveryResult = {
    name,
    events: phase.sent.acceptedIds.length,
    endpoints: measured.length,
    deliveries,
    deliveriesPerSecond: perSecond,
    latencyMs: withLatency && latencies.length > 0 ? percentiles(latencies) : undefined,
    sentPerSecond: withLatency ? phase.sent.sentPerSecond : undefined,
    duplicates: check.duplicates,
    rowCheck: check.summary,
    rowCheckOk: check.ok,
    // A failed ingest request is not a delivery mismatch, but it leaves the scenario short of its events.
    failures: sendFailures(phase.sent),
    ...peaks
  }
  const latency = row.latencyMs ? `, latency p50 ${row.latencyMs.p50.toFixed(1)} ms p99 ${row.latencyMs.p99.toFixed(1)} ms` : ''
  console.log(`${name}: ${perSecond.toFixed(0)} deliveries/s${latency}; ${row.rowCheck}${row.failures.map((failure) => `; FAILED: ${failure}`).join('')}`)
  return row
}

/**
 * Waits until the measured hooks have every event, then lets all endpoints answer at once (a slow one drains
 * what it still owes) and checks the phase's rows for every hook.
 */
async function finishPhase (context: DeliveryContext, phase: Phase, measured: Hook[], worker: BenchProcess): Promise<DeliveryCheck> {
  if (measured.length < phase.hooks.length) await waitForArrivals(endpointsOf(measured), phase.sent.acceptedIds.length, worker)
  for (const hook of phase.hooks) hook.endpoint.delayMs = 0
  return await settleAndCheck(context, phase, worker)
}

interface DrainSpec {
  endpoints: EndpointSpec[]
  events: number
  /** How many of the endpoints (the first ones) the row reports; the others are only checked. */
  measured?: number
  env?: Record<string, string>
}

/**
 * The events are queued with no worker running, then a fresh worker drains them; deliveries/s from the
 * first arrival to the last (the worker's start-up is not counted).
 */
async function drain (context: DeliveryContext, name: string, spec: DrainSpec): Promise<DeliveryResult> {
  const organization = await createOrganization(context.server.baseUrl, `bench-${name}`)
  const hooks = await addHooks(context, organization, spec.endpoints)
  const phase = { organization, hooks, sent: await queueEvents(context.server.baseUrl, organization, spec.events) }
  const measured = hooks.slice(0, spec.measured ?? hooks.length)
  return await withWorker(context, spec.env ?? {}, async (worker) => {
    const { result: check, peaks } = await measure(context, worker, () => finishPhase(context, phase, measured, worker))
    return result(name, phase, measured, check, peaks, false)
  })
}

/** A new organization with the given endpoints, sent PACED_RATE single events per second for `seconds`. */
async function pacedPhase (context: DeliveryContext, name: string, specs: EndpointSpec[], seconds: number): Promise<Phase> {
  const organization = await createOrganization(context.server.baseUrl, `bench-${name}`)
  const hooks = await addHooks(context, organization, specs)
  return { organization, hooks, sent: await sendPaced(context.server.baseUrl, organization, PACED_RATE, seconds) }
}

/** PACED_RATE events/s for the scenario's duration to a running worker; the first `measured` endpoints reported. */
async function paced (context: DeliveryContext, worker: BenchProcess, name: string, specs: EndpointSpec[], measured = specs.length): Promise<DeliveryResult> {
  const { result: { phase, check }, peaks } = await measure(context, worker, async () => {
    const phase = await pacedPhase(context, name, specs, context.durationSeconds)
    return { phase, check: await finishPhase(context, phase, phase.hooks.slice(0, measured), worker) }
  })
  return result(name, phase, phase.hooks.slice(0, measured), check, peaks, true)
}

/** Paced traffic to an endpoint of its own, not counted: the worker's JIT and connections warm up. */
async function warmUp (context: DeliveryContext, name: DeliveryScenarioName, worker: BenchProcess): Promise<void> {
  const phase = await pacedPhase(context, `warm-up-${name}`, [{ name: `${name}/warm-up` }], context.warmUpSeconds)
  await waitForArrivals(endpointsOf(phase.hooks), phase.sent.acceptedIds.length, worker)
}

/** delivery-latency: PACED_RATE events/s with the worker running; end-to-end latency from send to arrival. */
async function latency (context: DeliveryContext): Promise<DeliveryResult> {
  const name = 'delivery-latency'
  return await withWorker(context, {}, async (worker) => {
    await warmUp(context, name, worker)
    return await paced(context, worker, name, [{ name }])
  })
}

/** The user's WEBHOOK_TIMEOUT_MS, raised when it would time out the slow endpoint. */
function slowScenarioSettings (): Record<string, string> {
  const configured = Number(process.env.WEBHOOK_TIMEOUT_MS)
  return configured > 0 && configured < SLOW_SCENARIO_MIN_TIMEOUT_MS ? { WEBHOOK_TIMEOUT_MS: String(SLOW_SCENARIO_MIN_TIMEOUT_MS) } : {}
}

/**
 * delivery-slow-endpoint: a fast endpoint alone, then beside a slow one (answering after SLOW_ANSWER_MS; its
 * own organization each time), both as a drain (the fast endpoint's deliveries/s: does the slow one take the
 * worker's capacity?) and at PACED_RATE (its latency: does it wait behind the slow one?). Once the fast one
 * has everything, the slow one answers at once, so it drains and its rows are checked too.
 */
async function slowEndpoint (context: DeliveryContext): Promise<DeliveryResult[]> {
  const env = slowScenarioSettings()
  const fast = (name: string): EndpointSpec => ({ name: `delivery-slow-endpoint/${name}` })
  const slow = (name: string): EndpointSpec => ({ name: `delivery-slow-endpoint/${name}`, delayMs: SLOW_ANSWER_MS })
  const events = drainEvents(context.durationSeconds)
  const drains = [
    await drain(context, SLOW_ENDPOINT_ROWS.drainAlone, { endpoints: [fast('drain-alone')], events, env }),
    await drain(context, SLOW_ENDPOINT_ROWS.drainBeside, { endpoints: [fast('drain-fast'), slow('drain-slow')], events, measured: 1, env })
  ]
  const pacedRows = await withWorker(context, env, async (worker) => {
    await warmUp(context, 'delivery-slow-endpoint', worker)
    const rows: DeliveryResult[] = []
    // A p99 of a few tens of ms moves with whatever else the machine does: alternate the order each round (so
    // neither side always runs on a warmer or fuller database) and compare the medians.
    for (let round = 1; round <= context.pacedRounds; round++) {
      const alone = () => paced(context, worker, `${SLOW_ENDPOINT_ROWS.pacedAlone} #${round}`, [fast(`paced-alone-${round}`)])
      const beside = () => paced(context, worker, `${SLOW_ENDPOINT_ROWS.pacedBeside} #${round}`, [fast(`paced-fast-${round}`), slow(`paced-slow-${round}`)], 1)
      if (round % 2 === 1) rows.push(await alone(), await beside())
      else rows.push(await beside(), await alone())
    }
    return rows
  })
  return [...drains, ...pacedRows]
}

const drainEvents = (durationSeconds: number) => Math.round(DRAIN_EVENTS_PER_SECOND * durationSeconds)
const endpointNames = (name: string, count: number): EndpointSpec[] => Array.from({ length: count }, (_, index) => ({ name: `${name}/${index}` }))

/** The delivery scenarios' sizes at this duration, for the report's settings line. */
export function describeDeliveryScenarios (durationSeconds: number, pacedRounds: number): string {
  return `delivery scenarios: API with WEBHOOK_WORKER=off and a dist/worker.js per scenario, receivers in the bench process ` +
    `(node:http, keep-alive, 204); drain ${drainEvents(durationSeconds)} events to 1 endpoint, ` +
    `fanout ${Math.round(FANOUT_EVENTS_PER_SECOND * durationSeconds)} events to ${FANOUT_ENDPOINTS} endpoints (queued, then drained), ` +
    `latency ${PACED_RATE} events/s for ${durationSeconds} s, slow-endpoint both ways (its slow endpoint answers after ${SLOW_ANSWER_MS} ms; paced alone and beside in ${pacedRounds} rounds of alternating order, medians compared)`
}

/** Runs the selected delivery scenarios in a fixed order, each with its own worker and organizations. */
export async function runDeliveryScenarios (context: DeliveryContext, selected: (name: DeliveryScenarioName) => boolean, afterEach: () => Promise<void>): Promise<DeliveryResult[]> {
  const scenarios: Record<DeliveryScenarioName, () => Promise<DeliveryResult[]>> = {
    'delivery-drain': async () => [await drain(context, 'delivery-drain', { endpoints: endpointNames('delivery-drain', 1), events: drainEvents(context.durationSeconds) })],
    'delivery-latency': async () => [await latency(context)],
    'delivery-fanout': async () => [await drain(context, 'delivery-fanout', {
      endpoints: endpointNames('delivery-fanout', FANOUT_ENDPOINTS), events: Math.round(FANOUT_EVENTS_PER_SECOND * context.durationSeconds)
    })],
    'delivery-slow-endpoint': () => slowEndpoint(context)
  }
  const results: DeliveryResult[] = []
  for (const name of DELIVERY_SCENARIOS) {
    if (!selected(name)) continue
    results.push(...await scenarios[name]())
    await afterEach()
  }
  return results
}
