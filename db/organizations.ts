import type { Queryable } from './queryable.js'
import type { Tier } from '../schemas/keys.js'

export interface Organization {
  id: string
  name: string
  tier: Tier
  key_prefix: string
  created_at: Date
}

const COLUMNS = 'id, name, tier, key_prefix, created_at'

export async function insertOrganization (db: Queryable, name: string, tier: Tier, keyHash: Buffer, keyPrefix: string): Promise<Organization> {
  const { rows } = await db.query<Organization>(
    `INSERT INTO organizations (name, tier, key_hash, key_prefix) VALUES ($1, $2, $3, $4) RETURNING ${COLUMNS}`,
    [name, tier, keyHash, keyPrefix])
  return rows[0] as Organization
}

export async function findOrganizationByKeyHash (db: Queryable, keyHash: Buffer): Promise<Organization | undefined> {
  const { rows } = await db.query<Organization>({
    name: 'organization-by-key-hash',
    text: `SELECT ${COLUMNS} FROM organizations WHERE key_hash = $1`,
    values: [keyHash]
  })
  return rows[0]
}

export async function replaceKey (db: Queryable, organizationId: string, keyHash: Buffer, keyPrefix: string): Promise<void> {
  await db.query(
    'UPDATE organizations SET key_hash = $2, key_prefix = $3, key_rotated_at = now() WHERE id = $1',
    [organizationId, keyHash, keyPrefix])
}
