import type { Queryable } from './queryable.js'

export interface WebhookRow {
  id: string
  organization_id: string
  url: string
  event_types: string[]
  description: string | null
  enabled: boolean
  disabled_reason: string | null
  secret: string
  previous_secret: string | null
  previous_secret_until: Date | null
  created_at: Date
  updated_at: Date
}

export interface WebhookChanges {
  url?: string | undefined
  event_types?: string[] | undefined
  description?: string | null | undefined
  enabled?: boolean | undefined
}

const COLUMNS = `id, organization_id, url, event_types, description, enabled, disabled_reason, secret, previous_secret,
                 previous_secret_until, created_at, updated_at`

export interface NewWebhook {
  url: string
  event_types: string[]
  description: string | null
  /** As stored: sealed by the caller (lib/webhooks/secret-box.ts). */
  secret: string
}

/**
 * Inserts the endpoint unless the organization already has `max`; undefined then. Run inside a transaction:
 * the organization's row lock makes concurrent creations count each other (FOR NO KEY UPDATE, so event
 * inserts, which only take KEY SHARE on the organization, are not held up).
 */
export async function insertWebhookWithinLimit (client: Queryable, organizationId: string, fields: NewWebhook, max: number): Promise<WebhookRow | undefined> {
  await client.query('SELECT 1 FROM organizations WHERE id = $1 FOR NO KEY UPDATE', [organizationId])
  const { rows } = await client.query<WebhookRow>(
    `INSERT INTO webhooks (organization_id, url, event_types, description, secret)
     SELECT $1, $2, $3, $4, $5 WHERE (SELECT count(*) FROM webhooks WHERE organization_id = $1) < $6
     RETURNING ${COLUMNS}`,
    [organizationId, fields.url, fields.event_types, fields.description, fields.secret, max])
  return rows[0]
}

export async function listWebhooks (db: Queryable, organizationId: string): Promise<WebhookRow[]> {
  const { rows } = await db.query<WebhookRow>(`SELECT ${COLUMNS} FROM webhooks WHERE organization_id = $1 ORDER BY created_at, id`, [organizationId])
  return rows
}

export async function findWebhook (db: Queryable, organizationId: string, id: string): Promise<WebhookRow | undefined> {
  const { rows } = await db.query<WebhookRow>(`SELECT ${COLUMNS} FROM webhooks WHERE organization_id = $1 AND id = $2`, [organizationId, id])
  return rows[0]
}

/** Applies the given changes; re-enabling clears the disable reason and the failure streak. */
export async function updateWebhook (db: Queryable, organizationId: string, id: string, changes: WebhookChanges): Promise<WebhookRow | undefined> {
  const { rows } = await db.query<WebhookRow>(
    `UPDATE webhooks SET
       url = coalesce($3, url),
       event_types = coalesce($4, event_types),
       description = CASE WHEN $5 THEN $6 ELSE description END,
       enabled = coalesce($7, enabled),
       disabled_reason = CASE WHEN $7 THEN NULL ELSE disabled_reason END,
       consecutive_failures = CASE WHEN $7 THEN 0 ELSE consecutive_failures END,
       updated_at = now()
     WHERE organization_id = $1 AND id = $2 RETURNING ${COLUMNS}`,
    [organizationId, id, changes.url ?? null, changes.event_types ?? null, changes.description !== undefined, changes.description ?? null, changes.enabled ?? null])
  return rows[0]
}

export async function deleteWebhook (db: Queryable, organizationId: string, id: string): Promise<boolean> {
  const { rowCount } = await db.query('DELETE FROM webhooks WHERE organization_id = $1 AND id = $2', [organizationId, id])
  return rowCount === 1
}

/** New secret (as stored); the current one keeps signing alongside it for `overlapSeconds`. */
export async function rotateWebhookSecret (db: Queryable, organizationId: string, id: string, secret: string, overlapSeconds: number): Promise<WebhookRow | undefined> {
  const { rows } = await db.query<WebhookRow>(
    `UPDATE webhooks SET previous_secret = secret, previous_secret_until = now() + make_interval(secs => $4), secret = $3, updated_at = now()
     WHERE organization_id = $1 AND id = $2 RETURNING ${COLUMNS}`,
    [organizationId, id, secret, overlapSeconds])
  return rows[0]
}

/** Forgets previous secrets whose overlap has ended (migration 009's partial index keeps this cheap). */
export async function clearExpiredPreviousSecrets (db: Queryable): Promise<number> {
  const { rowCount } = await db.query(
    `UPDATE webhooks SET previous_secret = NULL, previous_secret_until = NULL
     WHERE previous_secret IS NOT NULL AND (previous_secret_until IS NULL OR previous_secret_until <= now())`)
  return rowCount ?? 0
}

export interface StoredSecrets {
  id: string
  secret: string
  previous_secret: string | null
}

/** Up to `limit` endpoints after `afterId` (id order) with a secret not stored under `prefix`. */
export async function listSecretsNotSealedWith (db: Queryable, prefix: string, afterId: string | null, limit: number): Promise<StoredSecrets[]> {
  const { rows } = await db.query<StoredSecrets>(
    `SELECT id, secret, previous_secret FROM webhooks
     WHERE ($2::uuid IS NULL OR id > $2) AND (NOT starts_with(secret, $1) OR NOT starts_with(previous_secret, $1))
     ORDER BY id LIMIT $3`,
    [prefix, afterId, limit])
  return rows
}

/**
 * Stores re-encrypted secrets, each only if the row still holds what was read (`before`): a secret rotated
 * meanwhile is already sealed with the current key and must not be overwritten with the older one.
 */
export async function replaceStoredSecrets (db: Queryable, before: StoredSecrets[], after: StoredSecrets[]): Promise<number> {
  const { rowCount } = await db.query(
    `UPDATE webhooks w SET secret = r.secret, previous_secret = r.previous_secret
     FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[]) AS r (id, old_secret, old_previous, secret, previous_secret)
     WHERE w.id = r.id AND w.secret = r.old_secret AND w.previous_secret IS NOT DISTINCT FROM r.old_previous`,
    [before.map((row) => row.id), before.map((row) => row.secret), before.map((row) => row.previous_secret),
      after.map((row) => row.secret), after.map((row) => row.previous_secret)])
  return rowCount ?? 0
}
