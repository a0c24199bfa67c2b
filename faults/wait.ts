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
