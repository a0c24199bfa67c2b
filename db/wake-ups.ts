import type { Queryable } from './queryable.js'

/**
 * The NOTIFY channels every process LISTENs on (lib/wake-ups/listener.ts). A notification only says "look":
 * the database stays the authority, and a missed one is made up for by polling or at reconnect.
 */

/** New or newly available events; payloads are "<organization_id>:<count>". */
export const EVENTS_CHANNEL = 'triggers_events'
/** New deliveries may be due; empty payload. */
export const DELIVERIES_CHANNEL = 'triggers_deliveries'
/** Migration 004's trigger sends the id of every updated or deleted organization here; 012's, "created:<id>" of new ones. */
export const ORGANIZATIONS_CHANNEL = 'triggers_organizations'
export const CREATED_ORGANIZATION_PREFIX = 'created:'

/** Wakes long polls and streams, on every instance, for events that arrived or became available again. */
export async function notifyEventsAvailable (db: Queryable, counts: Array<[organizationId: string, count: number]>): Promise<void> {
  await db.query({
    name: 'notify-events-available',
    text: 'SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS payload',
    values: [EVENTS_CHANNEL, counts.map(([organizationId, count]) => `${organizationId}:${count}`)]
  })
}

/** Wakes every delivery worker after new deliveries commit. */
export async function notifyDeliveriesQueued (db: Queryable): Promise<void> {
  await db.query({ name: 'notify-deliveries-queued', text: 'SELECT pg_notify($1, \'\')', values: [DELIVERIES_CHANNEL] })
}
