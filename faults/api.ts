import { ADMIN_TOKEN, RUN_ID } from './settings.js'

/** The few calls of the public API the suite makes outside the load itself. */
export interface Organization {
  id: string
  key: string
}

const CALL_TIMEOUT_MS = 10_000

interface CallOptions {
  method?: 'GET' | 'POST' | 'PATCH'
  body?: string
  headers?: Record<string, string>
  key?: string
  /** The only status accepted; anything else throws with the body. */
  expect: number
  signal?: AbortSignal
}

async function call (url: string, options: CallOptions): Promise<Response> {
  const headers: Record<string, string> = { 'content-type': 'application/json', ...options.headers }
  if (options.key !== undefined) headers['x-api-key'] = options.key
  const response = await fetch(url, {
    method: options.method ?? 'GET', headers, body: options.body, signal: options.signal ?? AbortSignal.timeout(CALL_TIMEOUT_MS)
  })
  if (response.status !== options.expect) throw new Error(`${options.method ?? 'GET'} ${url} answered ${response.status}: ${await response.text()}`)
  return response
}

export async function createOrganization (baseUrl: string, name: string): Promise<Organization> {
  const response = await call(`${baseUrl}/api/keys/generate`, {
    method: 'POST',
    expect: 201,
    headers: { 'x-admin-token': ADMIN_TOKEN },
    body: JSON.stringify({ organization_name: `faults-${RUN_ID}-${name}`, tier: 'enterprise' })
  })
  const body = await response.json() as { api_key: string, organization_id: string }
  return { id: body.organization_id, key: body.api_key }
}

/** Registers an endpoint for `eventTypes` (exact types or prefixes ending in *); returns its id. */
export async function createWebhook (baseUrl: string, organization: Organization, url: string, eventTypes: string[]): Promise<string> {
  const response = await call(`${baseUrl}/api/webhooks`, {
    method: 'POST', expect: 201, key: organization.key, body: JSON.stringify({ url, event_types: eventTypes })
  })
  return (await response.json() as { id: string }).id
}

/** Sends one event and returns its id (throws unless it was stored: 201). */
export async function sendEvent (baseUrl: string, organization: Organization, type: string, dedupId: string): Promise<string> {
  const response = await call(`${baseUrl}/api/events`, {
    method: 'POST', expect: 201, key: organization.key, body: JSON.stringify({ type, dedup_id: dedupId, payload: { probe: true } })
  })
  return (await response.json() as { event_id: string }).event_id
}

/** A long poll: leases up to one event, waiting up to `waitSeconds` for one to arrive; returns how many came. */
export async function leaseWaiting (baseUrl: string, organization: Organization, waitSeconds: number): Promise<number> {
  const response = await call(`${baseUrl}/api/inbox/lease`, {
    method: 'POST',
    expect: 200,
    key: organization.key,
    body: JSON.stringify({ limit: 1, lease_seconds: 60, wait_seconds: waitSeconds }),
    signal: AbortSignal.timeout(waitSeconds * 1000 + CALL_TIMEOUT_MS)
  })
  return (await response.json() as { events: unknown[] }).events.length
}

/** Sends up to 100 events in one batch; returns their ids in order (throws unless every one was accepted). */
export async function sendBatch (baseUrl: string, organization: Organization, events: Array<{ type: string, dedup_id: string }>): Promise<string[]> {
  const response = await call(`${baseUrl}/api/events/batch`, {
    method: 'POST',
    expect: 200,
    key: organization.key,
    body: JSON.stringify({ events: events.map((event) => ({ ...event, source: 'faults', payload: { batch: true } })) })
  })
  const body = await response.json() as { accepted: number, results: Array<{ status: string, event_id?: string, error?: string }> }
  const ids = body.results.map((result) => result.status === 'accepted' ? result.event_id : undefined)
  if (ids.length !== events.length || ids.some((id) => id === undefined)) {
    throw new Error(`batch: ${body.accepted} of ${events.length} accepted (${body.results.find((result) => result.status !== 'accepted')?.error ?? 'ids missing'})`)
  }
  return ids as string[]
}

export interface SubscriptionSettings {
  name?: string
  event_types?: string[]
  start?: string
  max_attempts?: number
  rate_limit_per_second?: number | null
}

/** Creates a pull subscription; returns its id. */
export async function createSubscription (baseUrl: string, organization: Organization, settings: SubscriptionSettings): Promise<string> {
  const response = await call(`${baseUrl}/api/subscriptions`, {
    method: 'POST', expect: 201, key: organization.key, body: JSON.stringify({ kind: 'pull', ...settings })
  })
  return (await response.json() as { id: string }).id
}

export async function updateSubscription (baseUrl: string, organization: Organization, id: string, settings: Omit<SubscriptionSettings, 'start'>): Promise<void> {
  const response = await call(`${baseUrl}/api/subscriptions/${id}`, { method: 'PATCH', expect: 200, key: organization.key, body: JSON.stringify(settings) })
  await response.body?.cancel()
}

export interface SubscriptionState {
  rate_limit_per_second: number | null
  pending: { in_flight: number, available: number, dead: number }
}

export async function readSubscription (baseUrl: string, organization: Organization, id: string): Promise<SubscriptionState> {
  const response = await call(`${baseUrl}/api/subscriptions/${id}`, { expect: 200, key: organization.key })
  return await response.json() as SubscriptionState
}

export interface ReplayState {
  replay_id: string
  total: number
  done: number
  status: 'running' | 'finished' | 'cancelled'
}

/** Replays [from, to) to the subscription (202); returns the replay as started. */
export async function startReplay (baseUrl: string, organization: Organization, id: string, from: Date, to: Date): Promise<ReplayState> {
  const response = await call(`${baseUrl}/api/subscriptions/${id}/replay`, {
    method: 'POST', expect: 202, key: organization.key, body: JSON.stringify({ from: from.toISOString(), to: to.toISOString() })
  })
  return await response.json() as ReplayState
}

export async function readReplay (baseUrl: string, organization: Organization, id: string, replayId: string): Promise<ReplayState> {
  const response = await call(`${baseUrl}/api/subscriptions/${id}/replays/${replayId}`, { expect: 200, key: organization.key })
  return await response.json() as ReplayState
}

/** The organization's remaining rate-limit budget as this instance reports it (undefined: no header). */
export async function rateLimitRemaining (baseUrl: string, organization: Organization): Promise<number | undefined> {
  const response = await call(`${baseUrl}/api/keys`, { expect: 200, key: organization.key })
  await response.body?.cancel()
  const header = response.headers.get('x-ratelimit-remaining')
  return header === null ? undefined : Number(header)
}
