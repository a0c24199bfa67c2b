import { setTimeout as sleep } from 'node:timers/promises'

// Every wait of the suite has a deadline: a service that never recovers fails a check instead of hanging the run.
const POLL_MS = 100

/** Polls `probe` every `intervalMs` until it is true; false when `timeoutMs` passes first. */
export async function waitUntil (probe: () => Promise<boolean> | boolean, timeoutMs: number, intervalMs = POLL_MS): Promise<boolean> {
  return (await readUntil(probe, (ok) => ok, timeoutMs, intervalMs)).ok
}

/** Reads `read` every `intervalMs` until `accept` likes a value; returns the last value read and whether it was accepted. */
export async function readUntil<T> (read: () => Promise<T> | T, accept: (value: T) => boolean, timeoutMs: number, intervalMs = POLL_MS): Promise<{ ok: boolean, last: T }> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const last = await read()
    if (accept(last)) return { ok: true, last }
    if (Date.now() >= deadline) return { ok: false, last }
    await sleep(intervalMs)
  }
}

/**
 * Reads `read` every `intervalMs` until `done` likes a value, for as long as `progress` of the values keeps
 * growing: gives up once it has not grown for `stallMs` (stuck), or after `maxMs` whatever happens. A busy
 * machine makes the work slow, which is waited for; only work that stops is a failure.
 */
export async function waitWhileProgressing<T> (
  read: () => Promise<T>, done: (value: T) => boolean, progress: (value: T) => number, stallMs: number, maxMs: number, intervalMs = POLL_MS
): Promise<{ ok: boolean, stalled: boolean, last: T }> {
  const deadline = Date.now() + maxMs
  let mark = Number.NEGATIVE_INFINITY
  let movedAt = Date.now()
  for (;;) {
    const last = await read()
    if (done(last)) return { ok: true, stalled: false, last }
    if (progress(last) > mark) {
      mark = progress(last)
      movedAt = Date.now()
    }
    const stalled = Date.now() - movedAt >= stallMs
    if (stalled || Date.now() >= deadline) return { ok: false, stalled, last }
    await sleep(intervalMs)
  }
}
