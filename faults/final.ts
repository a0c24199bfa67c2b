import { seconds } from './checks.js'
import type { ApiInstance } from './cluster.js'
import {
  connectionsOf, deliveriesOfEvents, deliveriesOfOrganization, missingEvents, pendingDeliveries, type DeliveryTally
} from './database.js'
import type { InstanceTally } from './load.js'
import type { Context, PhaseResult } from './phase.js'
import { readUntil, waitWhileProgressing } from './wait.js'
import { POOL_MAX } from './settings.js'

/**
 * Deliveries are waited for while attempts keep being recorded (a busy machine is slow, not wrong); stuck
 * means no attempt for longer than the retry schedule, a timeout and a killed worker's lapsing claims take.
 */
const DELIVERIES_STALL_MS = 30_000
const DELIVERIES_MAX_MS = 600_000
/** An announcement may hold a pool client for a few ms after the last answer; a leak never returns. */
const POOL_SETTLE_MS = 5000
const BUSY_STATES = new Set(['active', 'idle in transaction', 'idle in transaction (aborted)'])

export interface PhaseRow {
  name: string
  sent: number
  acknowledged: number
  lost: number
  other5xx: number
  status503: number
  otherStatus: number
  connectionErrors: string
  recovery: string
  wakeUp: string
  deliveries: DeliveryTally
  duplicates: number
}

function sum (tallies: InstanceTally[], pick: (tally: InstanceTally) => number): number {
  return tallies.reduce((total, tally) => total + pick(tally), 0)
}

/** Waits for every delivery of the load's organization to end while they make progress; shows what is still pending. */
export async function settleDeliveries (context: Context): Promise<void> {
  const started = Date.now()
  const { stalled } = await waitWhileProgressing(() => deliveriesOfOrganization(context.organization.id), (tally) => tally.pending === 0,
    (tally) => tally.attempts, DELIVERIES_STALL_MS, DELIVERIES_MAX_MS, 1000)
  const tally = await deliveriesOfOrganization(context.organization.id)
  const stuck = tally.pending === 0 ? [] : await pendingDeliveries(context.organization.id)
  const why = tally.pending === 0 ? '' : stalled ? ` (no attempt recorded for the last ${DELIVERIES_STALL_MS / 1000} s)` : ' (still progressing, given up)'
  context.checks.add('final', 'every queued delivery ended delivered or failed (none stuck)', tally.pending === 0,
    `${tally.delivered} delivered, ${tally.failed} failed, ${tally.pending} pending after ${seconds((Date.now() - started) / 1000)} s${why}` +
    stuck.map((row) => `\n      stuck: ${row.url} after ${row.attempts} attempts, next attempt due ${seconds(row.due_seconds_ago)} s ago, ` +
      `claimed until ${row.claimed_until?.toISOString() ?? 'none'}`).join(''))
}

/** The per-phase verdicts on the load's answers and deliveries, and the phase's row of the results table. */
export async function checkPhase (context: Context, phase: PhaseResult): Promise<PhaseRow> {
  const perInstance = [...phase.load?.perInstance ?? new Map<string, InstanceTally>()]
  checkSomethingToCheck(context, phase)
  const lost = await checkStored(context, phase)
  checkAnswers(context, phase, perInstance)
  const missed = phase.hookedAcked.filter((id) => !context.healthy.arrivals.has(id))
  context.checks.add(phase.name, `${phase.name}: every acknowledged hooked event reached the healthy receiver`, missed.length === 0,
    `${phase.hookedAcked.length - missed.length} of ${phase.hookedAcked.length}`)
  const tallies = perInstance.map(([, tally]) => tally)
  return {
    name: phase.name,
    sent: phase.load?.sent ?? 0,
    acknowledged: phase.acked.length,
    lost,
    other5xx: sum(tallies, (tally) => tally.other5xx),
    status503: sum(tallies, (tally) => tally.status503),
    otherStatus: sum(tallies, (tally) => tally.otherStatus),
    connectionErrors: perInstance.map(([label, tally]) => `${label} ${tally.connectionErrors + tally.timeouts}`).join(', '),
    recovery: phase.recovery.join(', ') || '—',
    wakeUp: phase.wakeUp.join(', ') || '—',
    deliveries: await deliveriesOfEvents(phase.acked),
    duplicates: context.healthy.duplicatesAmong(phase.hookedAcked)
  }
}

/**
 * The checks below hold for an empty phase too (0 of 0 acknowledged events stored, 0 of 0 delivered), and prove
 * nothing then: like the bench's NOTHING TO CHECK, a phase whose load sent nothing, or had no event
 * acknowledged, or no hooked one, fails. (A phase whose outage answered every request 503 is one.)
 */
function checkSomethingToCheck (context: Context, phase: PhaseResult): void {
  const sent = phase.load?.sent ?? 0
  const acked = phase.load?.acked.length ?? 0
  const hooked = phase.load?.hookedAcked.length ?? 0
  const ok = sent > 0 && acked > 0 && hooked > 0
  context.checks.add(phase.name, `${phase.name}: the load had events acknowledged, hooked ones among them (something to check)`, ok,
    `${sent} sent, ${acked} acknowledged, ${hooked} of them hooked${ok ? '' : ': NOTHING TO CHECK'}`)
}

/** Every 2xx-acknowledged event has its row; returns how many are missing. */
async function checkStored (context: Context, phase: PhaseResult): Promise<number> {
  const lost = await missingEvents(phase.acked)
  context.checks.add(phase.name, `${phase.name}: every acknowledged event stored`, lost.length === 0,
    `${phase.acked.length} acknowledged, ${lost.length} missing${lost.length > 0 ? ` (e.g. ${lost.slice(0, 3).join(', ')})` : ''}`)
  return lost.length
}

/**
 * Only a phase whose fault takes down something ingest needs may see 503s, and a killed instance may refuse
 * connections; nothing else is acceptable.
 */
function checkAnswers (context: Context, phase: PhaseResult, perInstance: Array<[string, InstanceTally]>): void {
  const tallies = perInstance.map(([, tally]) => tally)
  const evidence = tallies.flatMap((tally) => tally.samples).join('\n      ')
  const status503 = sum(tallies, (tally) => tally.status503)
  // Counted in the table either way; a phase with an outage (PostgreSQL down) may answer 503 for it.
  if (phase.outage === undefined) {
    context.checks.add(phase.name, `${phase.name}: no 503 (nothing ingest needs is down in this phase)`, status503 === 0,
      status503 === 0 ? '' : `${status503} answers 503\n      ${tallies.flatMap((tally) => tally.samples503).join('\n      ')}`)
  }
  const other5xx = sum(tallies, (tally) => tally.other5xx)
  context.checks.add(phase.name, `${phase.name}: no 5xx other than 503`, other5xx === 0, other5xx === 0 ? '' : evidence)
  const otherStatus = sum(tallies, (tally) => tally.otherStatus)
  context.checks.add(phase.name, `${phase.name}: no other error answers (4xx)`, otherStatus === 0, otherStatus === 0 ? '' : evidence)
  const unexpected = perInstance.filter(([label, tally]) => !phase.killed.includes(label) && tally.connectionErrors + tally.timeouts > 0)
  context.checks.add(phase.name, `${phase.name}: connection errors only at the killed instance`, unexpected.length === 0,
    unexpected.length === 0 ? '' : `${unexpected.map(([label, tally]) => `${label}: ${tally.connectionErrors} errors, ${tally.timeouts} timeouts`).join(', ')}\n      ${evidence}`)
}

/** The pool as the instance reports it: clients open, idle, and queries waiting for one. */
async function poolOf (api: ApiInstance): Promise<{ total: number, idle: number, waiting: number } | undefined> {
  const response = await fetch(`${api.baseUrl}/health/ready`, { signal: AbortSignal.timeout(2000) }).catch(() => undefined)
  if (response === undefined) return undefined
  return (await response.json() as { pool?: { total: number, idle: number, waiting: number } }).pool
}

/** After the load, each instance's own pool numbers: no client checked out, no query waiting for one. */
export async function checkPoolNumbers (context: Context): Promise<void> {
  for (const api of context.cluster.apis) {
    const { ok, last: pool } = await readUntil(() => poolOf(api), (pool) => pool !== undefined && pool.total === pool.idle && pool.waiting === 0, POOL_SETTLE_MS, 250)
    context.checks.add('final', `instance ${api.label}: 0 pool clients checked out after the load`, ok,
      pool === undefined ? 'no pool numbers from /health/ready' : `total ${pool.total}, idle ${pool.idle}, waiting ${pool.waiting}`)
  }
}

/** The server's view of the suite's processes: none busy or in a transaction, none over its pool size. */
export async function checkServerConnections (context: Context): Promise<void> {
  const names = [...context.cluster.apis.map((api) => api.applicationName), context.cluster.worker.applicationName]
  const { ok, last: rows } = await readUntil(() => connectionsOf(names), (rows) => rows.every((row) => !BUSY_STATES.has(row.state)), POOL_SETTLE_MS, 250)
  context.checks.add('final', 'pg_stat_activity: no connection of the suite\'s processes active or in a transaction', ok,
    rows.map((row) => `${row.application_name} ${row.state} ${row.count}`).join(', '))
  // Pool clients plus the one listening connection each process keeps outside its pool.
  const over = names.filter((name) => rows.filter((row) => row.application_name === name).reduce((total, row) => total + row.count, 0) > POOL_MAX + 1)
  context.checks.add('final', `pg_stat_activity: each process within its pool size (${POOL_MAX}) + 1 listener`, over.length === 0,
    over.length === 0 ? '' : `over: ${over.join(', ')}`)
}
