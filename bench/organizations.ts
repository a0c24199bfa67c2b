import { randomBytes, randomUUID } from 'node:crypto'
import { withClient } from '../test/support/database.js'

export interface Organization {
  id: string
  key: string
}

/**
 * The caller's ADMIN_TOKEN, or one made up for the run: the server then requires it for every key, and only
 * with it may a key be of a paid tier (the bench's organizations are enterprise).
 */
export const ADMIN_TOKEN = process.env.ADMIN_TOKEN || randomBytes(24).toString('base64url')

/** Every organization created and not yet deleted, so each clean-up removes exactly the bench's own data. */
const createdOrganizationIds: string[] = []

// A server that sheds load (503 overloaded) is asked again after its Retry-After, this many times.
const OVERLOADED_TRIES = 10

/** An enterprise organization (the bench runs the server with a limit no scenario reaches). */
export async function createOrganization (baseUrl: string, name: string): Promise<Organization> {
  const generate = () => fetch(`${baseUrl}/api/keys/generate`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-admin-token': ADMIN_TOKEN },
    body: JSON.stringify({ organization_name: `${name}-${randomUUID()}`, tier: 'enterprise' })
  })
  let response = await generate()
  for (let tries = 1; response.status === 503 && tries < OVERLOADED_TRIES; tries++) {
    await response.body?.cancel()
    await new Promise((resolve) => setTimeout(resolve, 1000 * Number(response.headers.get('retry-after') ?? 1)))
    response = await generate()
  }
  if (response.status !== 201) throw new Error(`POST /api/keys/generate answered ${response.status}: ${await response.text()}`)
  const body = await response.json() as { api_key: string, organization_id: string }
  createdOrganizationIds.push(body.organization_id)
  return { id: body.organization_id, key: body.api_key }
}

/** Registers a webhook endpoint for every event type; returns its id. */
export async function addWebhook (baseUrl: string, organization: Organization, url: string): Promise<string> {
  const response = await fetch(`${baseUrl}/api/webhooks`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': organization.key },
    body: JSON.stringify({ url })
  })
  if (response.status !== 201) throw new Error(`POST /api/webhooks answered ${response.status}: ${await response.text()}`)
  return (await response.json() as { id: string }).id
}

/**
 * Deletes the organizations created since the last clean-up, with their events, webhooks and deliveries.
 * delivery_attempts has no index on delivery_id, so the cascade from each deleted delivery scans that table:
 * the attempts go first (through their indexed webhook_id) and a VACUUM drops their dead rows. Measured:
 * 100 000 deliveries with 30 000 attempts took 35 s to delete directly, under 1 s this way.
 */
export async function deleteCreatedOrganizations (databaseUrl: string): Promise<void> {
  const ids = createdOrganizationIds.splice(0)
  if (ids.length === 0) return
  await withClient(databaseUrl, async (client) => {
    await client.query('DELETE FROM delivery_attempts WHERE webhook_id IN (SELECT id FROM webhooks WHERE organization_id = ANY($1::uuid[]))', [ids])
    await client.query('VACUUM delivery_attempts')
    await client.query('DELETE FROM organizations WHERE id = ANY($1::uuid[])', [ids])
  })
}
