import { Agent, errors } from 'undici'
import { parseRetryAfter } from './retry-schedule.js'
import type { SignedRequest } from './signing.js'
import { createGuardedLookup, checkUrlWithoutLookup, RefusedAddressError, type Resolver } from './url-guard.js'

export interface SendOutcome {
  succeeded: boolean
  responseStatus: number | null
  error: string | null
  /** What kind of failure, for the endpoint's concurrency: the receiver is overloaded or unreachable. */
  congested: boolean
  /** The receiver did not answer within the timeout (a failure too). */
  timedOut: boolean
  durationMs: number
  /** Seconds from a Retry-After header on 429/503. */
  retryAfterSeconds: number | undefined
}

export interface WebhookSenderOptions {
  timeoutMs: number
  allowPrivateUrls: boolean
  /** Kept-alive connections per endpoint origin (at least the most requests one endpoint may have in flight). */
  connectionsPerOrigin: number
  /** Name resolution for new connections (the system resolver by default; tests play DNS with it). */
  resolve?: Resolver
}

export interface WebhookSender {
  /** POSTs one signed webhook; `signal` aborts it (shutdown). Never throws: every failure is an outcome. */
  send: (url: string, request: SignedRequest, signal?: AbortSignal) => Promise<SendOutcome>
  close: () => Promise<void>
}

// Statuses that say the receiver is overloaded or failing, as opposed to refusing this request.
const isCongestionStatus = (status: number) => status === 429 || status >= 500

/**
 * Sends webhooks over kept-alive connections: one undici connection pool per endpoint origin (undici's Agent
 * keeps them), so a busy endpoint costs no TCP or TLS handshake per delivery. Every new connection resolves its
 * host through the SSRF guard and connects to the address it checked. Success is a 2xx within the timeout;
 * redirects are not followed and count as failures, like any other status, timeout or connection error.
 */
export function createWebhookSender (options: WebhookSenderOptions): WebhookSender {
  const agent = new Agent({
    connections: options.connectionsPerOrigin,
    keepAliveTimeout: 30_000,
    headersTimeout: options.timeoutMs,
    bodyTimeout: options.timeoutMs,
    connect: options.allowPrivateUrls ? {} : { lookup: createGuardedLookup(options.resolve) }
  })

  const send = async (url: string, request: SignedRequest, signal?: AbortSignal): Promise<SendOutcome> => {
    const started = performance.now()
    const outcome = (fields: Partial<SendOutcome>): SendOutcome => ({
      succeeded: false, responseStatus: null, error: null, congested: false, timedOut: false, retryAfterSeconds: undefined,
      durationMs: Math.round(performance.now() - started), ...fields
    })
    const checked = checkUrlWithoutLookup(url, options.allowPrivateUrls)
    if ('refused' in checked) return outcome({ error: `refused: ${checked.refused}` })
    const target = checked.url
    try {
      const response = await agent.request({
        origin: target.origin,
        path: `${target.pathname}${target.search}`,
        method: 'POST',
        headers: request.headers,
        body: request.body,
        signal
      })
      await response.body.dump()
      const status = response.statusCode
      const succeeded = status >= 200 && status < 300
      const retryAfterHeader = response.headers['retry-after']
      return outcome({
        succeeded,
        responseStatus: status,
        error: succeeded ? null : `receiver answered ${status}`,
        congested: isCongestionStatus(status),
        retryAfterSeconds: status === 429 || status === 503 ? parseRetryAfter(typeof retryAfterHeader === 'string' ? retryAfterHeader : null) : undefined
      })
    } catch (error) {
      return outcome(describeFailure(error, options.timeoutMs, signal))
    }
  }

  return { send, close: () => agent.close() }
}

function describeFailure (error: unknown, timeoutMs: number, signal: AbortSignal | undefined): Partial<SendOutcome> {
  if (error instanceof RefusedAddressError) return { error: `refused: ${error.message}` }
  if (error instanceof errors.HeadersTimeoutError || error instanceof errors.BodyTimeoutError || error instanceof errors.ConnectTimeoutError) {
    return { error: `timed out after ${timeoutMs} ms`, congested: true, timedOut: true }
  }
  if (signal?.aborted === true) return { error: 'aborted: worker shutting down' }
  const cause = error instanceof Error && error.cause instanceof Error ? error.cause : undefined
  if (cause instanceof RefusedAddressError) return { error: `refused: ${cause.message}` }
  const message = (cause ?? (error instanceof Error ? error : undefined))?.message ?? String(error)
  return { error: `request failed: ${message}`, congested: true }
}
