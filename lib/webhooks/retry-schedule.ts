/** Seconds to wait before each attempt: the first entry before attempt 1, the second before attempt 2, ... */
export type RetrySchedule = number[]

const JITTER = 0.1

export function parseRetrySchedule (text: string): RetrySchedule {
  return text.split(',').map((part) => Number.parseInt(part.trim(), 10))
}

/**
 * When to try again after `attemptsMade` failed attempts, or null when the schedule is exhausted. Up to 10 %
 * jitter spreads retries of many deliveries; a Retry-After from the receiver is honoured between this step's
 * delay and the schedule's longest delay.
 */
export function nextRetryDelayMs (schedule: RetrySchedule, attemptsMade: number, retryAfterSeconds?: number): number | null {
  const base = schedule[attemptsMade]
  if (base === undefined) return null
  const longest = Math.max(...schedule)
  const seconds = retryAfterSeconds === undefined ? base : Math.min(Math.max(retryAfterSeconds, base), longest)
  return Math.round(seconds * 1000 * (1 + Math.random() * JITTER))
}

/** Retry-After as seconds (delta-seconds or an HTTP date); undefined when absent or unreadable. */
export function parseRetryAfter (header: string | null, now = Date.now()): number | undefined {
  if (header === null || header.trim() === '') return undefined
  const seconds = Number(header)
  if (Number.isFinite(seconds)) return Math.max(0, seconds)
  const date = Date.parse(header)
  return Number.isNaN(date) ? undefined : Math.max(0, (date - now) / 1000)
}
