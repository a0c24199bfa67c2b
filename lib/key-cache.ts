import { LRUCache } from 'lru-cache'
import {
  findOrganizationByKeyHash, findWorkingKeys, listWorkingKeys, type Organization, type WorkingKeys
} from '../db/organizations.js'
import type { Queryable } from '../db/queryable.js'
import { CREATED_ORGANIZATION_PREFIX, ORGANIZATIONS_CHANNEL } from '../db/wake-ups.js'
import type { Config } from './config.js'
import type { WakeUpListener } from './wake-ups/listener.js'

export type KeyCacheSettings = Pick<Config, 'API_KEY_CACHE_SIZE' | 'API_KEY_CACHE_TTL_SECONDS' | 'API_KEY_NEGATIVE_CACHE_SECONDS'>

/**
 * Orders lookups against invalidations, so a lookup that read an organization before it changed (a rotation
 * committing while the lookup was in flight) never caches what it read. Each invalidation advances the clock;
 * a lookup notes the time it started and may cache only if its organization, and the cache as a whole, were
 * not invalidated since. Per-organization times are kept only while lookups are in flight.
 */
function createInvalidationClock () {
  let now = 0
  let clearedAt = 0
  let inFlight = 0
  const changedAt = new Map<string, number>()
  return {
    start: (): number => { inFlight++; return now },
    finish: (): void => { if (--inFlight === 0) changedAt.clear() },
    /** Nothing invalidated the organization (or everything) after `started`. */
    unchangedSince: (started: number, organizationId: string): boolean =>
      clearedAt <= started && (changedAt.get(organizationId) ?? 0) <= started,
    /** Nothing at all was invalidated after `started`. */
    quietSince: (started: number): boolean => now === started,
    changed: (organizationId: string): void => { changedAt.set(organizationId, ++now) },
    /** Whether the organization (alone) was invalidated after `started`. */
    changedSince: (started: number, organizationId: string): boolean => (changedAt.get(organizationId) ?? 0) > started,
    /** Whether everything was invalidated after `started`. */
    clearedSince: (started: number): boolean => clearedAt > started,
    clearedAll: (): void => { clearedAt = ++now; changedAt.clear() }
  }
}

/** A valid key's hash (base64), for whom, and until when (ms since the epoch; null: until the next rotation). */
interface ValidKey {
  hash: string
  organizationId: string
  expiresAt: number | null
}

const validKeysOf = (row: WorkingKeys): ValidKey[] => [
  { hash: row.key_hash.toString('base64'), organizationId: row.id, expiresAt: null },
  ...(row.previous_key_hash === null || row.previous_key_expires_at === null
    ? []
    : [{ hash: row.previous_key_hash.toString('base64'), organizationId: row.id, expiresAt: row.previous_key_expires_at.getTime() }])
]

/**
 * The hashes of every valid key (about 200 bytes each), so that a valid key never waits for the address budget
 * that protects lookups from guessing (lib/rate-limits.ts): after a rotation, the client's old workers spend
 * their address's budget with the old key, and the new one must still get through.
 */
function createValidKeys () {
  const byHash = new Map<string, ValidKey>()
  const hashesOf = new Map<string, string[]>()
  const remove = (organizationId: string) => {
    for (const hash of hashesOf.get(organizationId) ?? []) byHash.delete(hash)
    hashesOf.delete(organizationId)
  }
  return {
    has: (hash: string): boolean => {
      const entry = byHash.get(hash)
      return entry !== undefined && (entry.expiresAt === null || entry.expiresAt > Date.now())
    },
    /** Sets an organization's keys (none: it is gone). */
    replace: (organizationId: string, keys: ValidKey[]): void => {
      remove(organizationId)
      if (keys.length === 0) return
      for (const key of keys) byHash.set(key.hash, key)
      hashesOf.set(organizationId, keys.map((key) => key.hash))
    },
    organizations: (): string[] => [...hashesOf.keys()]
  }
}

export interface KeyCacheLog {
  warn: (details: object, message: string) => void
}

/**
 * Organizations by key hash, so a keyed request costs no database round trip. Entries are trusted only while
 * the notification listener is connected (it hears every rotation, tier change and deletion, from any
 * instance); the TTL bounds staleness should a notification still be missed, and an old key in its grace
 * period is cached no longer than the grace lasts. Unknown keys are remembered for a few seconds in a cache of
 * their own (a flood of bad keys evicts only other bad keys), so repeating one costs no query either.
 *
 * Beside it, the hashes of all valid keys (loaded whenever the listener connects, kept current by the same
 * notifications, which migration 012 sends for new organizations too): they let a valid key that the cache
 * cannot answer skip the address budget. They never grant anything: the lookup decides.
 */
export function createKeyCache (db: Queryable, wakeUps: WakeUpListener, settings: KeyCacheSettings, log: KeyCacheLog) {
  const { API_KEY_CACHE_SIZE: max, API_KEY_CACHE_TTL_SECONDS: ttlSeconds, API_KEY_NEGATIVE_CACHE_SECONDS: unknownSeconds } = settings
  const known = ttlSeconds === 0 ? undefined : new LRUCache<string, Organization>({ max, ttl: ttlSeconds * 1000 })
  const unknown = unknownSeconds === 0 ? undefined : new LRUCache<string, true>({ max, ttl: unknownSeconds * 1000 })
  const valid = createValidKeys()
  const clock = createInvalidationClock()
  const dropCached = (organizationId: string) => {
    clock.changed(organizationId)
    if (!known) return
    const hashes = [...known.entries()].flatMap(([hash, organization]) => organization.id === organizationId ? [hash] : [])
    for (const hash of hashes) known.delete(hash)
  }

  /** Re-reads one organization's valid keys, unless it changed again meanwhile (that change's read applies). */
  const reloadOrganization = async (organizationId: string) => {
    const started = clock.start()
    try {
      const row = await findWorkingKeys(db, organizationId)
      if (clock.unchangedSince(started, organizationId)) valid.replace(organizationId, row ? validKeysOf(row) : [])
    } finally {
      clock.finish()
    }
  }

  /** Re-reads every valid key; organizations that changed meanwhile keep what their own reload set. */
  const reloadAll = async () => {
    const started = clock.start()
    try {
      const rows = await listWorkingKeys(db)
      if (clock.clearedSince(started)) return
      const seen = new Set<string>()
      for (const row of rows) {
        seen.add(row.id)
        if (!clock.changedSince(started, row.id)) valid.replace(row.id, validKeysOf(row))
      }
      for (const organizationId of valid.organizations()) {
        if (!seen.has(organizationId) && !clock.changedSince(started, organizationId)) valid.replace(organizationId, [])
      }
    } finally {
      clock.finish()
    }
  }

  const reload = (organizationId: string) => {
    reloadOrganization(organizationId).catch((error: unknown) => log.warn({ err: error, organization_id: organizationId }, 'could not reload an organization\'s keys'))
  }
  wakeUps.listen(ORGANIZATIONS_CHANNEL, (payload) => {
    if (payload.startsWith(CREATED_ORGANIZATION_PREFIX)) {
      reload(payload.slice(CREATED_ORGANIZATION_PREFIX.length))
    } else {
      dropCached(payload)
      reload(payload)
    }
  })
  wakeUps.onConnect(() => {
    clock.clearedAll()
    known?.clear()
    reloadAll().catch((error: unknown) => log.warn({ err: error }, 'could not load the valid keys; keys not in memory wait for their address budget'))
  })

  /** The organization (or null for a key known to be unknown) from memory; undefined when only the database can tell. */
  const remembered = (cacheKey: string): Organization | null | undefined => {
    const organization = wakeUps.connected ? known?.get(cacheKey) : undefined
    if (organization) return organization
    return unknown?.has(cacheKey) === true && !valid.has(cacheKey) ? null : undefined
  }

  const lookup = async (hash: Buffer, cacheKey: string): Promise<Organization | undefined> => {
    const started = clock.start()
    try {
      const organization = await findOrganizationByKeyHash(db, hash)
      if (!organization) {
        if (clock.quietSince(started)) unknown?.set(cacheKey, true)
      } else if (wakeUps.connected && clock.unchangedSince(started, organization.id)) {
        const graceLeft = organization.key_expires_at === null ? Infinity : organization.key_expires_at.getTime() - Date.now()
        if (graceLeft > 0) known?.set(cacheKey, organization, { ttl: Math.min(ttlSeconds * 1000, graceLeft) })
      }
      return organization
    } finally {
      clock.finish()
    }
  }

  /**
   * Keys this process issued (a new organization, a rotation), in memory before it answers: a replaced key's
   * cached entry goes, and the new key is valid at once (the notification that tells every other process follows).
   */
  const issued = (keys: WorkingKeys) => {
    dropCached(keys.id)
    valid.replace(keys.id, validKeysOf(keys))
  }

  return { remembered, lookup, issued, isValid: valid.has }
}
