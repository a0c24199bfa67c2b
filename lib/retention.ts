import type { Pool } from 'pg'
import {
  createPartitions, DAY_PARTITIONED_TABLES, DEDUP_KEYS_TABLE, dedupPeriodAt, dropPartitions,
  listPartitions, raiseAttemptsHorizon, tryMaintenanceLock, type Partition
} from '../db/partitions.js'
import { forgetExpiredSubscriptionEvents, markExpiredPositions } from '../db/subscriptions.js'
import { inTransaction } from '../db/transaction.js'

export interface RetentionSettings {
  /** Days of events (with their deliveries and attempts) kept; 0 = forever. */
  eventDays: number
  /** Days of delivery attempts kept, when shorter than eventDays; 0 = as long as events. */
  attemptDays: number
  /** Days of partitions created ahead of today, so inserts never miss one while maintenance lags. */
  aheadDays: number
  /** Longest the maintenance waits for a table lock before giving up until its next run. */
  lockTimeoutMs: number
}

export interface MaintenanceResult {
  /** False when another instance held the maintenance lock: it does the work. */
  ran: boolean
  created: string[]
  dropped: string[]
}

const DAY_MS = 86_400_000

/** The UTC day of `time` as YYYY-MM-DD. */
const dayOf = (time: Date | number) => new Date(time).toISOString().slice(0, 10)
const startOfDay = (day: string) => Date.parse(`${day}T00:00:00Z`)

/**
 * The oldest time still kept for `days` of retention at `now`: whole UTC days, so a day's partition goes once
 * every row in it is older than `days` days (data lives `days` to `days + 1` days). Undefined: keep forever.
 */
export function keptFrom (now: Date, days: number): number | undefined {
  return days > 0 ? startOfDay(dayOf(now)) - days * DAY_MS : undefined
}

/**
 * The names of the partitions to drop: those whose whole range is older than what is kept. A partition with no
 * end (DEFAULT, MAXVALUE) is never dropped; one made by hand with a range is, once its range has expired.
 */
export function expiredPartitions (partitions: Partition[], keepFrom: number | undefined): string[] {
  if (keepFrom === undefined) return []
  return partitions.filter(({ endsAt }) => endsAt !== null && endsAt.getTime() <= keepFrom).map(({ name }) => name)
}

/**
 * One maintenance run, at `now` (injectable so tests can move the clock): creates the day partitions of events,
 * deliveries and attempts from today to `aheadDays` ahead and the dedup keys partitions of this period and the
 * next, then drops what retention no longer keeps: whole days of events with their deliveries and attempts
 * (attempts sooner with a shorter attemptDays), and dedup periods that ended before the oldest kept event; the
 * subscriptions' rows of events no longer kept go too. One
 * transaction under a transaction-level advisory lock, so one instance at a time does it, also through a
 * pooler; another instance's run is skipped, not waited for. Table locks wait at most lockTimeoutMs: a busy
 * table makes the run fail (and the next run retry) instead of queueing every insert behind it.
 */
export async function maintainPartitions (pool: Pool, settings: RetentionSettings, now: Date = new Date()): Promise<MaintenanceResult> {
  return inTransaction(pool, async (client) => {
    if (!await tryMaintenanceLock(client)) return { ran: false, created: [], dropped: [] }
    await client.query(`SET LOCAL lock_timeout = ${Math.max(1, Math.trunc(settings.lockTimeoutMs))}`)
    const today = startOfDay(dayOf(now))
    const days = Array.from({ length: settings.aheadDays + 1 }, (_, ahead) => dayOf(today + ahead * DAY_MS))
    const period = await dedupPeriodAt(client, now)
    const created = await createPartitions(client, { tables: DAY_PARTITIONED_TABLES, days, dedupPeriods: [period, period + 1] })
    const partitions = await listPartitions(client, [...DAY_PARTITIONED_TABLES, DEDUP_KEYS_TABLE])

    const eventsFrom = keptFrom(now, settings.eventDays)
    // A longer attempt retention than the events' is refused by the config (attempts live in their event's partitions).
    const attemptDays = settings.attemptDays > 0 && (settings.eventDays === 0 || settings.attemptDays < settings.eventDays) ? settings.attemptDays : settings.eventDays
    const attemptsFrom = keptFrom(now, attemptDays)
    const attemptsDropped = expiredPartitions(partitions.get('delivery_attempts') ?? [], attemptsFrom)
    const eventsDropped = expiredPartitions(partitions.get('events') ?? [], eventsFrom)
    const dropped = [
      ...attemptsDropped,
      ...expiredPartitions(partitions.get('deliveries') ?? [], eventsFrom),
      ...eventsDropped,
      ...expiredPartitions(partitions.get(DEDUP_KEYS_TABLE) ?? [], eventsFrom)
    ]
    if (attemptsFrom !== undefined && attemptsDropped.length > 0) await raiseAttemptsHorizon(client, new Date(attemptsFrom))
    if (eventsFrom !== undefined && eventsDropped.length > 0) await markExpiredPositions(client, new Date(eventsFrom))
    await dropPartitions(client, dropped)
    if (eventsFrom !== undefined) await forgetExpiredSubscriptionEvents(client, new Date(eventsFrom))
    return { ran: true, created, dropped }
  })
}
