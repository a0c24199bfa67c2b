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

export async function insertWebhook (db: Queryable, organizationId: string, fields: { url: string, event_types: string[], description: string | null, secret: string }): Promise<WebhookRow> {
  const { rows } = await db.query<WebhookRow>(
    `INSERT INTO webhooks (organization_id, url, event_types, description, secret) VALUES ($1, $2, $3, $4, $5) RETURNING ${COLUMNS}`,
    [organizationId, fields.url, fields.event_types, fields.description, fields.secret])
  return rows[0] as WebhookRow
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

/** New secret; the current one keeps signing alongside it for `overlapSeconds`. */
export async function rotateWebhookSecret (db: Queryable, organizationId: string, id: string, secret: string, overlapSeconds: number): Promise<WebhookRow | undefined> {
  const { rows } = await db.query<WebhookRow>(
    `UPDATE webhooks SET previous_secret = secret, previous_secret_until = now() + make_interval(secs => $4), secret = $3, updated_at = now()
     WHERE organization_id = $1 AND id = $2 RETURNING ${COLUMNS}`,
    [organizationId, id, secret, overlapSeconds])
  return rows[0]
}
