import { LRUCache } from 'lru-cache'
import { findOrganizationByKeyHash, type Organization } from '../db/organizations.js'
import type { Queryable } from '../db/queryable.js'
import { ORGANIZATIONS_CHANNEL } from '../db/wake-ups.js'
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
    clearedAll: (): void => { clearedAt = ++now; changedAt.clear() }
  }
}

/**
 * Organizations by key hash, so a keyed request costs no database round trip. Entries are trusted only while
 * the notification listener is connected (it hears every rotation, tier change and deletion, from any
 * instance); the TTL bounds staleness should a notification still be missed. Unknown keys are remembered for a
 * few seconds in a cache of their own (a flood of bad keys evicts only other bad keys), so repeating one costs
 * no query either.
 */
export function createKeyCache (db: Queryable, wakeUps: WakeUpListener, settings: KeyCacheSettings) {
  const { API_KEY_CACHE_SIZE: max, API_KEY_CACHE_TTL_SECONDS: ttlSeconds, API_KEY_NEGATIVE_CACHE_SECONDS: unknownSeconds } = settings
  const known = ttlSeconds === 0 ? undefined : new LRUCache<string, Organization>({ max, ttl: ttlSeconds * 1000 })
  const unknown = unknownSeconds === 0 ? undefined : new LRUCache<string, true>({ max, ttl: unknownSeconds * 1000 })
  const clock = createInvalidationClock()
  const forget = (organizationId: string) => {
    clock.changed(organizationId)
    if (!known) return
    const hashes = [...known.entries()].flatMap(([hash, organization]) => organization.id === organizationId ? [hash] : [])
    for (const hash of hashes) known.delete(hash)
  }
  wakeUps.listen(ORGANIZATIONS_CHANNEL, forget)
  wakeUps.onConnect(() => {
    clock.clearedAll()
    known?.clear()
  })

  /** The organization (or null for a key known to be unknown) from memory; undefined when only the database can tell. */
  const remembered = (cacheKey: string): Organization | null | undefined => {
    const organization = wakeUps.connected ? known?.get(cacheKey) : undefined
    if (organization) return organization
    return unknown?.has(cacheKey) === true ? null : undefined
  }

  const lookup = async (hash: Buffer, cacheKey: string): Promise<Organization | undefined> => {
    const started = clock.start()
    try {
      const organization = await findOrganizationByKeyHash(db, hash)
      if (!organization) {
        if (clock.quietSince(started)) unknown?.set(cacheKey, true)
      } else if (wakeUps.connected && clock.unchangedSince(started, organization.id)) {
        known?.set(cacheKey, organization)
      }
      return organization
    } finally {
      clock.finish()
    }
  }
  return { remembered, lookup, forget }
}
