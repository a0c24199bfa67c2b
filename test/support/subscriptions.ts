import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import type { TestOrganization } from './helpers.js'
import { waitFor } from './webhooks.js'

/** A subscription as the API answers it. */
export interface Subscription {
  id: string
  kind: string
  name: string | null
  event_types: string[]
  max_in_flight: number
  max_attempts: number
  rate_limit_per_second: number | null
  position_expired: boolean
  position_expired_at: string | null
  retry_schedule: number[]
  paused: boolean
  position: string
  pending: { in_flight: number, available: number, retrying: number, dead: number }
  created_at: string
  updated_at: string
}

/** One event of a lease. */
export interface LeasedEvent {
  event_id: string
  type: string
  payload: Record<string, unknown>
  lease_count: number
}

/** A lease's answer: no lease_id when there was nothing to lease. */
export interface Lease {
  lease_id: string | null
  leased_until: string | null
  events: LeasedEvent[]
}

/** What an ack answers. */
export interface Acked {
  acknowledged: string[]
  not_found: string[]
}

/** An error answer's body. */
export interface ErrorBody {
  code: string
  message: string
}

/** The answer of a lease that found nothing. */
export const NIL_LEASE: Lease = { lease_id: null, leased_until: null, events: [] }

/** A request as the organization, with `payload` as the JSON body when given. */
export function request (app: FastifyInstance, organization: TestOrganization, method: 'GET' | 'POST' | 'PATCH' | 'DELETE', url: string, payload?: object): Promise<LightMyRequestResponse> {
  return app.inject({ method, url, headers: organization.headers, ...(payload === undefined ? {} : { payload }) })
}

/** Creates a pull subscription with `body`'s settings; throws unless it is 201. */
export async function createSubscription (app: FastifyInstance, organization: TestOrganization, body: object = {}): Promise<Subscription> {
  const response = await request(app, organization, 'POST', '/api/subscriptions', { kind: 'pull', ...body })
  if (response.statusCode !== 201) throw new Error(`subscription creation answered ${response.statusCode}: ${response.body}`)
  return response.json<Subscription>()
}

/** Reads a subscription; throws unless it is 200. */
export async function getSubscription (app: FastifyInstance, organization: TestOrganization, id: string): Promise<Subscription> {
  const response = await request(app, organization, 'GET', `/api/subscriptions/${id}`)
  if (response.statusCode !== 200) throw new Error(`GET subscription answered ${response.statusCode}: ${response.body}`)
  return response.json<Subscription>()
}

/** One lease call with `body`; throws unless it is 200. */
export async function lease (app: FastifyInstance, organization: TestOrganization, id: string, body: object = {}): Promise<Lease> {
  const response = await request(app, organization, 'POST', `/api/subscriptions/${id}/lease`, body)
  if (response.statusCode !== 200) throw new Error(`lease answered ${response.statusCode}: ${response.body}`)
  return response.json<Lease>()
}

/** One ack call with `body` (lease_id, maybe event_ids); throws unless it is 200. */
export async function ack (app: FastifyInstance, organization: TestOrganization, id: string, body: object): Promise<Acked> {
  const response = await request(app, organization, 'POST', `/api/subscriptions/${id}/ack`, body)
  if (response.statusCode !== 200) throw new Error(`ack answered ${response.statusCode}: ${response.body}`)
  return response.json<Acked>()
}

/** Sends the events in batches of up to 100, one per type given; their ids in order. */
export async function sendEvents (app: FastifyInstance, organization: TestOrganization, types: string[]): Promise<string[]> {
  const ids: string[] = []
  for (let start = 0; start < types.length; start += 100) {
    const events = types.slice(start, start + 100).map((type, i) => ({ type, payload: { n: start + i } }))
    const response = await request(app, organization, 'POST', '/api/events/batch', { events })
    if (response.statusCode >= 300) throw new Error(`batch answered ${response.statusCode}: ${response.body}`)
    ids.push(...response.json<{ results: Array<{ event_id: string }> }>().results.map((result) => result.event_id))
  }
  return ids
}

/** `count` times the one event type, for sendEvents. */
export const times = (count: number, type = 'sub.test'): string[] => Array.from({ length: count }, () => type)

/** The ids of a lease's events, in order. */
export const idsOf = (leased: Lease): string[] => leased.events.map((event) => event.event_id)

/**
 * Leases until the subscription hands something out; that lease. For events whose lease ran out, and for new
 * events: a subscription reads them only once every transaction older than theirs has ended on the server (as the
 * inbox's cursors do), so an empty lease while another test holds a transaction open means "not yet", not "none".
 */
export async function leaseSome (app: FastifyInstance, organization: TestOrganization, id: string, body: object = {}): Promise<Lease> {
  let leased: Lease = NIL_LEASE
  await waitFor('a lease with events', async () => {
    leased = await lease(app, organization, id, body)
    return leased.lease_id !== null
  })
  return leased
}

/**
 * Leases and acks, 100 at a time, until `count` events came, then leases once more; what came, in order. An empty
 * lease on the way means "not yet" (see leaseSome), so it waits; the last look's events are ones too many, and show
 * in the caller's comparison.
 */
export async function take (app: FastifyInstance, organization: TestOrganization, id: string, count: number): Promise<string[]> {
  const seen: string[] = []
  await waitFor(`${count} events from the subscription`, async () => {
    while (seen.length < count) {
      const leased = await lease(app, organization, id, { limit: 100 })
      if (leased.lease_id === null) return false
      seen.push(...idsOf(leased))
      await ack(app, organization, id, { lease_id: leased.lease_id })
    }
    return true
  })
  const extra = await lease(app, organization, id, { limit: 100 })
  seen.push(...idsOf(extra))
  return seen
}
