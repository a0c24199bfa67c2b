import type { AttemptOutcome } from '../../db/deliveries.js'

/** What an outcome needs of a delivery row. */
export interface DeliveryKey {
  id: string
  event_id: string
  event_created_at: string
  attempts: number
}

/** The outcome a worker would record for the delivery's next attempt: a 204, or a 500 to retry (in a minute) or give up on. */
export function attemptOutcome (delivery: DeliveryKey, result: 'succeeded' | 'retry' | 'failed', attemptedAt = new Date()): AttemptOutcome {
  return {
    delivery_id: delivery.id,
    event_id: delivery.event_id,
    event_created_at: delivery.event_created_at,
    attempt: delivery.attempts + 1,
    succeeded: result === 'succeeded',
    response_status: result === 'succeeded' ? 204 : 500,
    error: result === 'succeeded' ? null : 'receiver answered 500',
    duration_ms: 7,
    attempted_at: attemptedAt,
    next_attempt_at: result === 'retry' ? new Date(attemptedAt.getTime() + 60_000) : null
  }
}
