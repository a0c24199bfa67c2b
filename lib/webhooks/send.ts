import { refuseWebhookUrl } from './url-guard.js'
import { parseRetryAfter } from './retry-schedule.js'
import type { SignedRequest } from './signing.js'

export interface SendOutcome {
  succeeded: boolean
  responseStatus: number | null
  error: string | null
  durationMs: number
  /** Seconds from a Retry-After header on 429/503. */
  retryAfterSeconds: number | undefined
}

export interface SendOptions {
  timeoutMs: number
  allowPrivateUrls: boolean
  /** Aborts the request (shutdown); the outcome then says so. */
  signal: AbortSignal
}

/**
 * POSTs one signed webhook. Success is a 2xx within the timeout; redirects are not followed and count as
 * failures, like any other status, timeout or connection error. The response body is discarded.
 */
export async function sendWebhook (url: string, request: SignedRequest, options: SendOptions): Promise<SendOutcome> {
  const started = performance.now()
  const outcome = (fields: Partial<SendOutcome>): SendOutcome => ({
    succeeded: false, responseStatus: null, error: null, retryAfterSeconds: undefined, durationMs: Math.round(performance.now() - started), ...fields
  })
  const refused = await refuseWebhookUrl(url, options.allowPrivateUrls)
  if (refused !== undefined) return outcome({ error: `refused: ${refused}` })

  const timeout = new AbortController()
  const timer = setTimeout(() => timeout.abort(), options.timeoutMs)
  try {
    const response = await fetch(url, {
      method: 'POST',
      headers: request.headers,
      body: request.body,
      redirect: 'manual',
      signal: AbortSignal.any([timeout.signal, options.signal])
    })
    await response.body?.cancel()
    const succeeded = response.status >= 200 && response.status < 300
    const retryAfter = response.status === 429 || response.status === 503 ? parseRetryAfter(response.headers.get('retry-after')) : undefined
    return outcome({
      succeeded,
      responseStatus: response.status,
      error: succeeded ? null : `receiver answered ${response.status}`,
      retryAfterSeconds: retryAfter
    })
  } catch (error) {
    if (timeout.signal.aborted) return outcome({ error: `timed out after ${options.timeoutMs} ms` })
    if (options.signal.aborted) return outcome({ error: 'aborted: worker shutting down' })
    const cause = error instanceof Error && error.cause instanceof Error ? error.cause.message : undefined
    return outcome({ error: `request failed: ${cause ?? (error instanceof Error ? error.message : String(error))}` })
  } finally {
    clearTimeout(timer)
  }
}
