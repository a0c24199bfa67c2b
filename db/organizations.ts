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

/** The organization a key belongs to, and when that key stops working (null for the current key). */
export interface KeyHolder extends Organization {
  key_expires_at: Date | null
}

/** The organization whose current key, or previous key still in its grace period, has this hash. */
export async function findOrganizationByKeyHash (db: Queryable, keyHash: Buffer): Promise<KeyHolder | undefined> {
  const { rows } = await db.query<KeyHolder>({
    name: 'organization-by-key-hash',
    text: `SELECT ${COLUMNS}, CASE WHEN key_hash = $1 THEN NULL ELSE previous_key_expires_at END AS key_expires_at
             FROM organizations
            WHERE key_hash = $1 OR (previous_key_hash = $1 AND previous_key_expires_at > now())`,
    values: [keyHash]
  })
  return rows[0]
}

export interface KeyRotation {
  organizationId: string
  /** The key the request presented: the rotation happens only while it is still the current one. */
  presentedHash: Buffer
  keyHash: Buffer
  keyPrefix: string
  /** How long the presented key keeps working (0: it stops now); any earlier grace period ends either way. */
  graceSeconds: number
}

/**
 * Replaces the current key if it is still the presented one. Of concurrent rotations with one key, the first
 * to commit wins; the others find the key changed once the row lock is theirs and update nothing: undefined.
 */
export async function rotateKey (db: Queryable, rotation: KeyRotation): Promise<{ previous_key_expires_at: Date | null } | undefined> {
  const { rows } = await db.query<{ previous_key_expires_at: Date | null }>(
    `UPDATE organizations
        SET key_hash = $3, key_prefix = $4, key_rotated_at = now(),
            previous_key_hash = CASE WHEN $5::int > 0 THEN key_hash END,
            previous_key_expires_at = CASE WHEN $5::int > 0 THEN now() + make_interval(secs => $5::int) END
      WHERE id = $1 AND key_hash = $2
  RETURNING previous_key_expires_at`,
    [rotation.organizationId, rotation.presentedHash, rotation.keyHash, rotation.keyPrefix, rotation.graceSeconds])
  return rows[0]
}

export interface WorkingKeys {
  id: string
  key_hash: Buffer
  /** Null unless a previous key is in its grace period. */
  previous_key_hash: Buffer | null
  previous_key_expires_at: Date | null
}

const WORKING_KEYS = `SELECT id, key_hash,
       CASE WHEN previous_key_expires_at > now() THEN previous_key_hash END AS previous_key_hash,
       CASE WHEN previous_key_expires_at > now() THEN previous_key_expires_at END AS previous_key_expires_at
  FROM organizations`

/** The keys of one organization that work right now (none when it no longer exists). */
export async function findWorkingKeys (db: Queryable, organizationId: string): Promise<WorkingKeys | undefined> {
  const { rows } = await db.query<WorkingKeys>(`${WORKING_KEYS} WHERE id = $1`, [organizationId])
  return rows[0]
}

/** Every working key of every organization: at start-up, and whenever notifications may have been missed. */
export async function listWorkingKeys (db: Queryable): Promise<WorkingKeys[]> {
  const { rows } = await db.query<WorkingKeys>(WORKING_KEYS)
  return rows
}
