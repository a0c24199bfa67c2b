import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { withClient } from '../test/support/database.js'
import type { ReceiverEndpoint } from './receiver.js'
import { WORKER_LOG, type BenchProcess } from './server.js'

/** Give up waiting when nothing new has arrived for this long (a first retry comes after 5 s). */
const STALL_MS = 30_000
/** Longest any wait for deliveries may last, whatever the progress. */
const MAX_WAIT_MS = 900_000
const ARRIVAL_POLL_MS = 20
const RECORD_POLL_MS = 250
/** The worker records an attempt after the receiver has answered; this long for the last records to land. */
const RECORD_WAIT_MS = 30_000

/** A webhook of the scenario's organization and the receiver endpoint it points at. */
export interface Hook {
  webhookId: string
  endpoint: ReceiverEndpoint
}

/**
 * Waits until every endpoint has received `expected` distinct events, the worker exits, nothing has arrived
 * for STALL_MS, or `maxMs` has passed. Returns why it stopped; the row check afterwards says what is missing.
 */
export async function waitForArrivals (endpoints: ReceiverEndpoint[], expected: number, worker: BenchProcess, maxMs = MAX_WAIT_MS): Promise<string> {
  const started = performance.now()
  let seen = -1
  let progressAt = started
  while (performance.now() - started < maxMs) {
    const arrived = endpoints.reduce((sum, endpoint) => sum + Math.min(endpoint.deliveries, expected), 0)
    if (arrived === endpoints.length * expected) return 'all arrived'
    if (!worker.running()) return `the worker exited (see ${WORKER_LOG})`
    if (arrived !== seen) {
      seen = arrived
      progressAt = performance.now()
    } else if (performance.now() - progressAt > STALL_MS) {
      return `nothing arrived for ${STALL_MS / 1000} s`
    }
    await sleep(ARRIVAL_POLL_MS)
  }
  return `stopped after ${(maxMs / 1000).toFixed(0)} s`
}

async function deliveredCount (databaseUrl: string, organizationId: string): Promise<number> {
  return await withClient(databaseUrl, async (client) => {
    const { rows } = await client.query<{ delivered: number }>(
      `SELECT count(*)::int AS delivered FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id
       WHERE w.organization_id = $1 AND d.status = 'delivered'`, [organizationId])
    return rows[0]?.delivered ?? 0
  })
}

/** Waits (bounded) until the database shows `expected` delivered deliveries for the organization. */
export async function waitForRecorded (databaseUrl: string, organizationId: string, expected: number): Promise<void> {
  const deadline = performance.now() + RECORD_WAIT_MS
  while (performance.now() < deadline && await deliveredCount(databaseUrl, organizationId) < expected) await sleep(RECORD_POLL_MS)
}

export interface DeliveryCheck {
  ok: boolean
  summary: string
  duplicates: number
}

interface WebhookCounts {
  webhook_id: string
  expected: number
  delivered: number
}

/** Per webhook of the organization: matching events, and those with a delivered delivery. */
async function webhookCounts (databaseUrl: string, organizationId: string): Promise<{ eventIds: Set<string>, webhooks: WebhookCounts[], retries: number }> {
  return await withClient(databaseUrl, async (client) => {
    const events = await client.query<{ id: string }>('SELECT id::text AS id FROM events WHERE organization_id = $1', [organizationId])
    const webhooks = await client.query<WebhookCounts>(
      `SELECT w.id::text AS webhook_id, count(e.id)::int AS expected,
              count(e.id) FILTER (WHERE EXISTS (
                SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.webhook_id = w.id AND d.status = 'delivered'))::int AS delivered
       FROM webhooks w JOIN events e ON e.organization_id = w.organization_id AND webhook_matches(w.event_types, e.type)
       WHERE w.organization_id = $1 GROUP BY w.id`, [organizationId])
    const retries = await client.query<{ retries: number }>(
      `SELECT coalesce(sum(d.attempts - 1), 0)::int AS retries FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id
       WHERE w.organization_id = $1 AND d.attempts > 1`, [organizationId])
    return { eventIds: new Set(events.rows.map((row) => row.id)), webhooks: webhooks.rows, retries: retries.rows[0]?.retries ?? 0 }
  })
}

/** What the receiver saw of one hook against the organization's events. */
function receiverCounts (hook: Hook, eventIds: Set<string>): { received: number, missing: number, unexpected: number } {
  let missing = 0
  for (const id of eventIds) if (!hook.endpoint.has(id)) missing++
  let unexpected = 0
  for (const id of hook.endpoint.eventIds()) if (!eventIds.has(id)) unexpected++
  return { received: hook.endpoint.deliveries - unexpected, missing, unexpected }
}

/**
 * After a scenario: the organization's events are exactly those the API accepted; every event has a
 * `delivered` delivery for each matching webhook in the database, and its receiver endpoint saw it at least
 * once (and nothing else). Duplicates (an event received twice at one endpoint) are counted, not failed:
 * delivery is at least once. No event at all fails: 0/0 delivered agrees but checks nothing.
 */
export async function checkDeliveries (databaseUrl: string, organizationId: string, acceptedIds: string[], hooks: Hook[]): Promise<DeliveryCheck> {
  const { eventIds, webhooks, retries } = await webhookCounts(databaseUrl, organizationId)
  const eventsOk = eventIds.size === acceptedIds.length && acceptedIds.every((id) => eventIds.has(id))
  const expected = webhooks.reduce((sum, webhook) => sum + webhook.expected, 0)
  const delivered = webhooks.reduce((sum, webhook) => sum + webhook.delivered, 0)
  const seen = hooks.map((hook) => receiverCounts(hook, eventIds))
  const received = seen.reduce((sum, counts) => sum + counts.received, 0)
  const missing = seen.reduce((sum, counts) => sum + counts.missing, 0)
  const unexpected = seen.reduce((sum, counts) => sum + counts.unexpected, 0)
  const malformed = hooks.reduce((sum, hook) => sum + hook.endpoint.malformed, 0)
  const duplicates = hooks.reduce((sum, hook) => sum + hook.endpoint.duplicates, 0)
  const ok = eventIds.size > 0 && eventsOk && webhooks.length === hooks.length && expected === eventIds.size * hooks.length &&
    delivered === expected && missing === 0 && unexpected === 0 && malformed === 0
  const problems = [
    eventsOk ? '' : `, ${acceptedIds.length} accepted`,
    unexpected > 0 ? `, ${unexpected} unknown ids received` : '',
    malformed > 0 ? `, ${malformed} malformed requests` : ''
  ].join('')
  const summary = `${eventIds.size} events × ${hooks.length} endpoints: ${delivered}/${expected} delivered, ${received}/${expected} received` +
    `${problems}, ${duplicates} duplicates, ${retries} retries: ${eventIds.size === 0 ? 'NOTHING TO CHECK (no event)' : ok ? 'OK' : 'MISMATCH'}`
  return { ok, summary, duplicates }
}
