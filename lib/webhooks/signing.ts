import { createHmac, randomBytes } from 'node:crypto'
import type { WebhookRow } from '../../db/webhooks.js'
import type { SecretBox } from './secret-box.js'

const SECRET_PREFIX = 'whsec_'

/** `whsec_` + base64 of 24 random bytes, the Standard Webhooks secret format. */
export function createWebhookSecret (): string {
  return `${SECRET_PREFIX}${randomBytes(24).toString('base64')}`
}

/** What a listing shows of a stored secret: its format only, none of its characters (they would shorten a guess). */
export function maskSecret (secret: string): string {
  return secret.startsWith(SECRET_PREFIX) ? `${SECRET_PREFIX}…` : '…'
}

export interface SignedRequest {
  body: string
  headers: Record<string, string>
}

/**
 * Builds the Standard Webhooks request: body {type, timestamp, data}, webhook-id (the event id, the same on
 * every retry), webhook-timestamp, and webhook-signature with one `v1,` signature per active secret. `dataJson`
 * is the payload as JSON text (as PostgreSQL hands it over), placed in the body as it is: parsing it only to
 * serialize it again would cost the worker more than the rest of the body.
 */
export function signWebhook (eventId: string, type: string, dataJson: string, secrets: string[], now = new Date()): SignedRequest {
  const body = `{"type":${JSON.stringify(type)},"timestamp":"${now.toISOString()}","data":${dataJson}}`
  const timestamp = Math.floor(now.getTime() / 1000)
  const signatures = secrets.map((secret) => `v1,${signature(secret, eventId, timestamp, body)}`)
  return {
    body,
    headers: {
      'content-type': 'application/json',
      'user-agent': 'triggers-api-webhooks/1',
      'webhook-id': eventId,
      'webhook-timestamp': String(timestamp),
      'webhook-signature': signatures.join(' ')
    }
  }
}

/**
 * The spec's signature: base64 of HMAC-SHA256 over `<id>.<timestamp>.<body>`, keyed by the secret's bytes (the
 * base64 after `whsec_`). node:crypto's native HMAC, since signing is on every delivery's path; the tests verify
 * these signatures with the standardwebhooks package.
 */
function signature (secret: string, eventId: string, timestamp: number, body: string): string {
  const key = Buffer.from(secret.startsWith(SECRET_PREFIX) ? secret.slice(SECRET_PREFIX.length) : secret, 'base64')
  return createHmac('sha256', key).update(`${eventId}.${timestamp}.${body}`).digest('base64')
}

/**
 * The secrets that sign right now, decrypted: the current one, and the previous one during its overlap (after
 * it, the previous secret is ignored here and cleared from the row by the sweep in plugins/app/webhook-secrets.ts).
 */
export function activeSecrets (webhook: Pick<WebhookRow, 'secret' | 'previous_secret' | 'previous_secret_until'>, box: SecretBox, now = new Date()): string[] {
  const { previous_secret: previous, previous_secret_until: until } = webhook
  const previousActive = previous !== null && until !== null && until > now
  return previousActive ? [box.open(webhook.secret), box.open(previous)] : [box.open(webhook.secret)]
}
