import autocannon from 'autocannon'
import { randomUUID } from 'node:crypto'
import { withClient } from '../test/support/database.js'
import type { Organization } from './organizations.js'

export const CONNECTIONS = 50
export const PAYLOAD_BYTES = 1024
export const BATCH_SIZE = 100

/** What one request sends: its body and the dedup_ids in it (to find rows whose answer never came). */
interface RequestBody {
  body: string
  dedupIds: string[]
}

export interface HttpScenario {
  path: string
  eventsPerRequest: number
  nextBody: () => RequestBody
}

export interface HttpRun {
  result: autocannon.Result
  /** Ids of the events that 2xx answers reported as newly stored. */
  acceptedIds: Set<string>
  /** dedup_ids of requests whose answer was never read (autocannon drops in-flight requests at the end). */
  unansweredDedupIds: Set<string>
  /** Answers per HTTP status, so a failed run says what it got. */
  statuses: Map<number, number>
}

/** An event body of about PAYLOAD_BYTES as text, with the dedup_id spliced in (cheap for the load generator). */
function eventTemplate (): (dedupId: string) => string {
  const marker = '"__DEDUP_ID__"'
  const shell = (filler: string) => JSON.stringify({
    type: 'bench.ingest',
    source: 'bench',
    dedup_id: '__DEDUP_ID__',
    payload: { order_id: 12345, customer: { id: 'cus_bench', tier: 'enterprise' }, amount_cents: 4999, currency: 'EUR', notes: filler }
  })
  const fillerLength = Math.max(0, PAYLOAD_BYTES - shell('').length - randomUUID().length + '__DEDUP_ID__'.length)
  const [before = '', after = ''] = shell('x'.repeat(fillerLength)).split(marker)
  return (dedupId) => `${before}"${dedupId}"${after}`
}

/** The same ~1 KB payload the HTTP scenarios send, for the raw INSERT scenario. */
export function benchPayload (): Record<string, unknown> {
  const event = JSON.parse(eventTemplate()(randomUUID())) as { payload: Record<string, unknown> }
  return event.payload
}

export function singleEvents (): HttpScenario {
  const render = eventTemplate()
  return {
    path: '/api/events',
    eventsPerRequest: 1,
    nextBody: () => {
      const dedupId = randomUUID()
      return { body: render(dedupId), dedupIds: [dedupId] }
    }
  }
}

export function repeatedEvent (): HttpScenario {
  const dedupId = randomUUID()
  const body = eventTemplate()(dedupId)
  return { path: '/api/events', eventsPerRequest: 1, nextBody: () => ({ body, dedupIds: [dedupId] }) }
}

export function batches (): HttpScenario {
  const render = eventTemplate()
  return {
    path: '/api/events/batch',
    eventsPerRequest: BATCH_SIZE,
    nextBody: () => {
      const batchId = randomUUID()
      const dedupIds = Array.from({ length: BATCH_SIZE }, (_, index) => `${batchId}/${index}`)
      return { body: `{"events":[${dedupIds.map(render).join(',')}]}`, dedupIds }
    }
  }
}

/** Event ids a 2xx answer reports as new: a 201 single event, or the accepted items of a batch. */
export function acceptedIdsOf (status: number, body: string): string[] {
  if (status !== 201 && status !== 200) return []
  let parsed: { event_id?: unknown, results?: Array<{ status?: unknown, event_id?: unknown }> }
  try {
    parsed = JSON.parse(body) as typeof parsed
  } catch {
    return []
  }
  if (Array.isArray(parsed.results)) {
    return parsed.results.flatMap((item) => item.status === 'accepted' && typeof item.event_id === 'string' ? [item.event_id] : [])
  }
  return status === 201 && typeof parsed.event_id === 'string' ? [parsed.event_id] : []
}

export interface LoadOptions {
  /** Connections, each sending its next request as soon as the previous one is answered (CONNECTIONS by default). */
  connections?: number
  /** Called for every answer with its status and latency in ms (autocannon's own histogram mixes all statuses). */
  onAnswer?: (status: number, latencyMs: number) => void
}

function runAutocannon (options: autocannon.Options, onAnswer: LoadOptions['onAnswer']): Promise<autocannon.Result> {
  return new Promise((resolve, reject) => {
    const instance = autocannon(options, (error: unknown, result) => { if (error) reject(error instanceof Error ? error : new Error(String(error))); else resolve(result) })
    if (onAnswer) instance.on('response', (_client, status, _bytes, latencyMs) => { onAnswer(status, latencyMs) })
  })
}

export async function runHttpLoad (baseUrl: string, organization: Organization, scenario: HttpScenario, seconds: number, options: LoadOptions = {}): Promise<HttpRun> {
  const acceptedIds = new Set<string>()
  const unansweredDedupIds = new Set<string>()
  const statuses = new Map<number, number>()
  // autocannon hands setupRequest and onResponse the same context object for one request.
  const dedupIdsOf = new WeakMap<object, string[]>()
  const result = await runAutocannon({
    url: `${baseUrl}${scenario.path}`,
    connections: options.connections ?? CONNECTIONS,
    duration: seconds,
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': organization.key },
    requests: [{
      setupRequest: (request, context) => {
        const { body, dedupIds } = scenario.nextBody()
        for (const dedupId of dedupIds) unansweredDedupIds.add(dedupId)
        dedupIdsOf.set(context, dedupIds)
        return { ...request, body }
      },
      onResponse: (status, body, context) => {
        statuses.set(status, (statuses.get(status) ?? 0) + 1)
        for (const dedupId of dedupIdsOf.get(context) ?? []) unansweredDedupIds.delete(dedupId)
        for (const id of acceptedIdsOf(status, body)) acceptedIds.add(id)
      }
    }]
  }, options.onAnswer)
  return { result, acceptedIds, unansweredDedupIds, statuses }
}

/** `404 ×1200, 500 ×3`: the statuses other than 2xx and how often each came. */
export function describeStatuses (statuses: Map<number, number>): string {
  return [...statuses].filter(([status]) => status < 200 || status >= 300).sort(([a], [b]) => a - b)
    .map(([status, count]) => `${status} ×${count}`).join(', ')
}

/**
 * Why a run's figures cannot stand. Every HTTP scenario expects a 2xx for every request (the rate limit is
 * out of reach, a repeated dedup_id is answered 200), so a run with no 2xx measured only failures, and any
 * other answer or a request left without one means the figures are not those of the scenario.
 */
export function loadFailures (run: Pick<HttpRun, 'result' | 'statuses'>): string[] {
  const { result } = run
  const failures: string[] = []
  if (result['2xx'] === 0) failures.push(`no request was answered 2xx (${result.requests.sent} sent): nothing was measured`)
  if (result.non2xx > 0) failures.push(`${result.non2xx} non-2xx answers (${describeStatuses(run.statuses)}) where none is expected`)
  if (result.errors > 0) failures.push(`${result.errors} requests failed without an answer (${result.timeouts} timeouts)`)
  return failures
}

export interface RowCheck {
  ok: boolean
  summary: string
}

/**
 * Counted after the run has settled. Every accepted id needs its row (nothing acknowledged and lost), and no
 * other row may exist except those of requests cut off at the end (committed, but their answer was dropped).
 * `outboxPerEvent` > 0 also checks that each row has that many deliveries. No accepted event fails the check.
 */
export async function checkRows (databaseUrl: string, organizationId: string, run: HttpRun, outboxPerEvent = 0): Promise<RowCheck> {
  return await withClient(databaseUrl, async (client) => {
    const { rows: [counts] } = await client.query<{ rows: number, answered: number, cut_off: number, deliveries: number }>(
      `SELECT count(*)::int AS rows,
              count(*) FILTER (WHERE id = ANY($2::uuid[]))::int AS answered,
              count(*) FILTER (WHERE dedup_id = ANY($3::text[]) AND NOT id = ANY($2::uuid[]))::int AS cut_off,
              (SELECT count(*)::int FROM deliveries d JOIN events e ON e.id = d.event_id WHERE e.organization_id = $1) AS deliveries
         FROM events WHERE organization_id = $1`,
      [organizationId, [...run.acceptedIds], [...run.unansweredDedupIds]])
    if (!counts) throw new Error('the row count query returned nothing')
    const accepted = run.acceptedIds.size
    const rowsOk = counts.answered === accepted && counts.rows === accepted + counts.cut_off
    const outboxOk = outboxPerEvent === 0 || counts.deliveries === counts.rows * outboxPerEvent
    const cutOff = counts.cut_off > 0 ? ` + ${counts.cut_off} cut off at the end` : ''
    const outbox = outboxPerEvent === 0 ? '' : `, ${counts.deliveries} outbox rows`
    const counted = `${counts.rows} rows = ${accepted} accepted${cutOff}${outbox}`
    // 0 rows = 0 accepted agrees, but proves nothing: the check has to have had something to check.
    if (accepted === 0) return { ok: false, summary: `${counted}: NOTHING TO CHECK (no event accepted)` }
    return { ok: rowsOk && outboxOk, summary: `${counted}: ${rowsOk && outboxOk ? 'OK' : 'MISMATCH'}` }
  })
}
