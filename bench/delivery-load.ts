import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { acceptedIdsOf, BATCH_SIZE, benchPayload } from './http-load.js'
import type { Organization } from './organizations.js'
import { nowMs } from './receiver.js'

/** Batch requests in flight while queueing (enough to keep group commit busy, few enough to stay polite). */
const QUEUE_CONCURRENCY = 4
/** Paced requests in flight at most; beyond it the sender waits and falls behind its schedule (reported). */
const PACED_MAX_IN_FLIGHT = 256

export interface SentEvents {
  /** Ids of the events the API reported as stored. */
  acceptedIds: string[]
  /** Requests answered with a non-2xx status, answered without an accepted event, or not answered at all. */
  failedRequests: number
  /** The failed requests by what they got (`500`, `200 without an accepted event`, `no answer`), for the report. */
  failedAnswers: Map<string, number>
  /** Events per second actually sent (a paced sender that fell behind sends fewer than asked). */
  sentPerSecond: number
}

/** An event body of ~1 KB like the other scenarios', whose payload carries the time it is sent. */
function deliveryEventBody (): () => object {
  const payload = benchPayload()
  return () => ({ type: 'bench.delivery', source: 'bench', payload: { ...payload, sent_at_ms: nowMs() } })
}

/** Sends one request and collects what it reports as stored; errors are counted, never thrown. */
function collector (baseUrl: string, organization: Organization) {
  const sent: SentEvents = { acceptedIds: [], failedRequests: 0, failedAnswers: new Map(), sentPerSecond: 0 }
  const fail = (answer: string) => {
    sent.failedRequests++
    sent.failedAnswers.set(answer, (sent.failedAnswers.get(answer) ?? 0) + 1)
  }
  const post = async (path: string, body: object) => {
    try {
      const response = await fetch(`${baseUrl}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-api-key': organization.key },
        body: JSON.stringify(body)
      })
      const ids = acceptedIdsOf(response.status, await response.text())
      if (ids.length === 0) fail(response.status >= 200 && response.status < 300 ? `${response.status} without an accepted event` : String(response.status))
      sent.acceptedIds.push(...ids)
    } catch {
      fail('no answer')
    }
  }
  return { sent, post }
}

/** `3 ingest requests failed (500 ×2, no answer ×1)`, or nothing when none failed. */
export function sendFailures (sent: SentEvents): string[] {
  if (sent.failedRequests === 0) return []
  const answers = [...sent.failedAnswers].map(([answer, count]) => `${answer} ×${count}`).join(', ')
  return [`${sent.failedRequests} ingest requests failed (${answers})`]
}

/** Queues `count` events through POST /api/events/batch as fast as the API takes them. */
export async function queueEvents (baseUrl: string, organization: Organization, count: number): Promise<SentEvents> {
  const { sent, post } = collector(baseUrl, organization)
  const nextEvent = deliveryEventBody()
  const started = performance.now()
  let queued = 0
  const sender = async () => {
    while (queued < count) {
      const size = Math.min(BATCH_SIZE, count - queued)
      queued += size
      await post('/api/events/batch', { events: Array.from({ length: size }, nextEvent) })
    }
  }
  await Promise.all(Array.from({ length: QUEUE_CONCURRENCY }, sender))
  sent.sentPerSecond = count / ((performance.now() - started) / 1000)
  return sent
}

/**
 * Sends `ratePerSecond` single events (POST /api/events) for `seconds` on a fixed schedule (open loop: a slow
 * answer does not delay the next send, up to PACED_MAX_IN_FLIGHT requests in flight).
 */
export async function sendPaced (baseUrl: string, organization: Organization, ratePerSecond: number, seconds: number): Promise<SentEvents> {
  const { sent, post } = collector(baseUrl, organization)
  const nextEvent = deliveryEventBody()
  const total = Math.max(1, Math.round(ratePerSecond * seconds))
  const inFlight = new Set<Promise<void>>()
  const started = performance.now()
  for (let index = 0; index < total; index++) {
    const wait = started + index * 1000 / ratePerSecond - performance.now()
    if (wait > 0) await sleep(wait)
    if (inFlight.size >= PACED_MAX_IN_FLIGHT) await Promise.race(inFlight)
    const request: Promise<void> = post('/api/events', nextEvent()).finally(() => inFlight.delete(request))
    inFlight.add(request)
  }
  const sendingSeconds = (performance.now() - started) / 1000
  await Promise.all(inFlight)
  // The loop ends as the last request starts: total − 1 intervals.
  sent.sentPerSecond = total === 1 ? 1 : (total - 1) / Math.max(sendingSeconds, 1e-3)
  return sent
}
