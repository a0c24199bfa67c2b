import { setTimeout as sleep } from 'node:timers/promises'
import type { Organization } from './api.js'
import { Checks, errorMessage, seconds } from './checks.js'
import { startApi, startWorker, waitReady, type ApiInstance, type Cluster } from './cluster.js'
import { Load, type LoadResult } from './load.js'
import { errorLines, logOffset, type ManagedProcess } from './processes.js'
import type { Receiver } from './receivers.js'
import { TYPES } from './settings.js'

/** Load before the fault, so it hits a service under way rather than an idle one. */
const LEAD_IN_MS = 3000
/** Load after recovery: the service must keep answering once it says it is back. */
const TAIL_MS = 3000
/** The load's hard stop in any phase (the phases normally end long before). */
const PHASE_MAX_SECONDS = 60

export interface FaultyEndpoint {
  receiver: Receiver
  webhookId: string
}

export interface Context {
  cluster: Cluster
  /** The load's organization: the healthy endpoint takes `faults.hook.*`, the faulty ones `faults.hook.faulty`. */
  organization: Organization
  /** An organization without load or webhooks, for the long poll (any pending event would answer it at once). */
  pollOrganization: Organization
  healthy: Receiver
  faulty: FaultyEndpoint[]
  checks: Checks
}

export interface PhaseResult {
  name: string
  startedAt: number
  load: LoadResult | undefined
  /** Events acknowledged in the phase (the load's and the probes'). */
  acked: string[]
  /** Those of a hooked type: each must reach the healthy receiver. */
  hookedAcked: string[]
  /** Those sent to the load's organization (all but the long poll's probe): its subscriptions must hand each out. */
  organizationAcked: string[]
  /** Instances the phase killed on purpose: their connection errors are expected. */
  killed: string[]
  /** What the phase takes down that ingest needs (so 503 answers are expected); undefined: none may come. */
  outage: string | undefined
  recovery: string[]
  wakeUp: string[]
  notes: string[]
}

export interface PhaseSpec {
  /** Short and unique: it goes into the load's dedup_ids. */
  id: string
  name: string
  hookedType?: string
  maxHooked?: number
  /**
   * What the fault takes down that ingest depends on, when it does: only then may the API answer 503 (database
   * unavailable). In any other phase a 503 fails it.
   */
  outage?: string
  /**
   * One of the faults a replay and a backfill must come through (issue 21): both must be under way from the
   * phase's start to its end, which is checked, so that the fault hits them mid-way.
   */
  duringSubscriptionReads?: boolean
  /** Injects the fault while the load runs, and waits for recovery. */
  during: (context: Context, load: Load, result: PhaseResult) => Promise<void>
  /** Checks made after the load stopped. */
  after?: (context: Context, result: PhaseResult) => Promise<void>
}

/** The two API instances, A and B. */
export function instances (context: Context): [ApiInstance, ApiInstance] {
  const [first, second] = context.cluster.apis
  if (!first || !second) throw new Error('the suite runs two API instances')
  return [first, second]
}

/**
 * One phase: load on both instances, the fault, recovery, a little more load; then a look at every process
 * (a crash is a failure, and the process is restarted as a process manager would, so later phases still
 * run) and the phase's own checks. An exception fails the phase, not the suite.
 */
export async function runPhase (context: Context, spec: PhaseSpec): Promise<PhaseResult> {
  console.log(`\n== ${spec.name}`)
  const since = Date.now()
  const result: PhaseResult = {
    name: spec.name, startedAt: since, load: undefined, acked: [], hookedAcked: [], organizationAcked: [], killed: [], outage: spec.outage, recovery: [], wakeUp: [], notes: []
  }
  const offsets = await logOffsets(context)
  const load = startLoad(context, spec)
  try {
    await sleep(LEAD_IN_MS)
    await spec.during(context, load, result)
    await sleep(TAIL_MS)
  } catch (error) {
    context.checks.add(spec.name, `${spec.name}: fault injected and recovered from`, false, errorMessage(error))
  } finally {
    result.load = await load.stop()
    result.acked.push(...result.load.acked)
    result.hookedAcked.push(...result.load.hookedAcked)
    result.organizationAcked.push(...result.load.acked)
  }
  await superviseProcesses(context, spec.name, since, offsets)
  try {
    await spec.after?.(context, result)
  } catch (error) {
    context.checks.add(spec.name, `${spec.name}: checks after the fault ran`, false, errorMessage(error))
  }
  return result
}

function startLoad (context: Context, spec: PhaseSpec): Load {
  return Load.start({
    name: spec.id,
    targets: context.cluster.apis.map((api) => ({ label: api.label, baseUrl: api.baseUrl })),
    organization: context.organization,
    hookedType: spec.hookedType ?? TYPES.hooked,
    maxHooked: spec.maxHooked,
    maxSeconds: PHASE_MAX_SECONDS
  })
}

function processesOf (context: Context): ManagedProcess[] {
  return [...context.cluster.apis.map((api) => api.process), context.cluster.worker.process]
}

async function logOffsets (context: Context): Promise<Map<ManagedProcess, number>> {
  const processes = processesOf(context)
  const offsets = await Promise.all(processes.map((managed) => logOffset(managed.logFile)))
  return new Map(processes.map((managed, index) => [managed, offsets[index] ?? 0]))
}

/** A crash (an exit the suite did not cause) fails the phase, with the log lines that explain it. */
async function superviseProcesses (context: Context, phase: string, since: number, offsets: Map<ManagedProcess, number>): Promise<void> {
  for (const managed of processesOf(context)) {
    const crashes = managed.crashesSince(since)
    const exits = crashes.map((exit) => `exited (code ${exit.code}, signal ${exit.signal}) ${seconds((exit.at - since) / 1000)} s into the phase`)
    const evidence = crashes.length === 0 ? [] : await errorLines(managed.logFile, offsets.get(managed) ?? 0)
    context.checks.add(phase, `${phase}: ${managed.name} kept running`, crashes.length === 0,
      [...exits, ...evidence.map((line) => `log: ${line}`)].join('\n      '))
  }
  await restartDead(context)
}

/** Restarts whatever is not running, as a process manager would. */
async function restartDead (context: Context): Promise<void> {
  for (const api of context.cluster.apis) {
    if (!api.process.alive) await startApi(api)
  }
  if (!context.cluster.worker.process.alive) await startWorker(context.cluster.worker)
}

/**
 * Seconds from `since` until the instance answers /health/ready 200 again. One that died meanwhile is
 * restarted first (its crash is reported by the phase's process check), and the time includes the restart.
 */
export async function recoverApi (context: Context, phase: string, api: ApiInstance, since: number): Promise<number | undefined> {
  let ready = await waitReady(api, since)
  let restarted = false
  if (ready === undefined && !api.process.alive) {
    restarted = true
    api.process.start()
    ready = await waitReady(api, since)
  }
  context.checks.add(phase, `${phase}: instance ${api.label} answers /health/ready again`, ready !== undefined,
    `${ready === undefined ? 'not within 30 s' : `after ${seconds(ready)} s`}${restarted ? ' (it died and was restarted)' : ''}`)
  return ready
}
