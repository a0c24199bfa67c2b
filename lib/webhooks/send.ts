import type { LookupAllOptions } from 'node:dns'
import { EventEmitter } from 'node:events'
import { Agent, errors, type Dispatcher } from 'undici'
import { parseRetryAfter } from './retry-schedule.js'
import type { SignedRequest } from './signing.js'
import { createGuardedLookup, checkUrlWithoutLookup, RefusedAddressError, type GuardedLookup, type Resolver } from './url-guard.js'

export interface SendOutcome {
  succeeded: boolean
  responseStatus: number | null
  error: string | null
  /** What kind of failure, for the endpoint's concurrency: the receiver is overloaded or unreachable. */
  congested: boolean
  /** No status line arrived within the attempt's deadline (a failure too). */
  timedOut: boolean
  durationMs: number
  /** Seconds from a Retry-After header on 429/503. */
  retryAfterSeconds: number | undefined
}

export interface WebhookSenderOptions {
  /** The whole attempt's deadline: connecting, the answer's status line and headers, and its body. */
  timeoutMs: number
  allowPrivateUrls: boolean
  /**
   * At most this many connections to one origin. Unlimited when absent, which the delivery worker relies on:
   * with a cap, a send to one endpoint waits inside undici for a connection held by another endpoint on the same
   * host (another organization's, say), however healthy its own receiver.
   */
  connectionsPerOrigin?: number
  /** How long an idle kept-alive connection stays open (30 s by default). */
  keepAliveTimeoutMs?: number
  /** Name resolution for new connections (the system resolver by default; tests play DNS with it). */
  resolve?: Resolver
}

export interface WebhookSender {
  /**
   * POSTs one signed webhook. `signal` aborts it (shutdown); `limitMs` shortens its deadline below the sender's
   * timeout (what is left of the delivery's claim). Never throws: every failure is an outcome.
   */
  send: (url: string, request: SignedRequest, signal?: AbortSignal, limitMs?: number) => Promise<SendOutcome>
  close: () => Promise<void>
}

/**
 * Once the status line is in, the body is read for at most this long (and within the deadline). A body that
 * ends by then leaves its connection reusable; one that does not is cut off, closing the connection, and does
 * not change the outcome. Normal receivers' bodies end with their headers or a moment later.
 */
export const BODY_GRACE_MS = 200
// Bodies are read only to keep connections reusable, never kept: a longer one closes its connection instead.
const BODY_LIMIT_BYTES = 64 * 1024
// How much later than the deadline undici's own connect timeout ends a connection attempt.
const BACKSTOP_MARGIN_MS = 1000

// Statuses that say the receiver is overloaded or failing, as opposed to refusing this request.
const isCongestionStatus = (status: number) => status === 429 || status >= 500

/** The reason an attempt is aborted with when its deadline passes (as opposed to a shutdown). */
class DeadlineError extends Error {
  override readonly name = 'DeadlineError'
  constructor (readonly deadlineMs: number) {
    super(`timed out after ${deadlineMs} ms`)
  }
}

/**
 * One attempt's abort, handed to undici as the request's signal. undici takes an EventEmitter with `aborted` and
 * `reason` as well as an AbortSignal; an AbortController per send, with undici's listeners on its EventTarget,
 * cost a measurable share of a drain's CPU, an EventEmitter next to nothing.
 */
class AttemptAbort extends EventEmitter {
  aborted = false
  reason: unknown = undefined

  abort (reason: unknown): void {
    if (this.aborted) return
    this.aborted = true
    this.reason = reason
    this.emit('abort')
  }
}

/**
 * The attempts running under each caller's signal, so that a signal has one listener however many sends it
 * covers (adding and removing a listener on an AbortSignal per send costs more than the rest of the abort).
 */
class AttemptsBySignal {
  private readonly attempts = new WeakMap<AbortSignal, Set<AttemptAbort>>()

  add (signal: AbortSignal, attempt: AttemptAbort): void {
    if (signal.aborted) return attempt.abort(signal.reason)
    let running = this.attempts.get(signal)
    if (running === undefined) {
      const started = new Set<AttemptAbort>()
      running = started
      this.attempts.set(signal, started)
      signal.addEventListener('abort', () => {
        for (const each of started) each.abort(signal.reason)
      }, { once: true })
    }
    running.add(attempt)
  }

  delete (signal: AbortSignal, attempt: AttemptAbort): void {
    this.attempts.get(signal)?.delete(attempt)
  }
}

/**
 * Sends webhooks over kept-alive connections: one undici connection pool per endpoint origin (undici's Agent
 * keeps them), so a busy endpoint costs no TCP or TLS handshake per delivery. Every new connection resolves its
 * host through the SSRF guard and connects to the address it checked.
 *
 * Each attempt has one deadline, enforced by aborting it: undici's bodyTimeout bounds only the gap between two
 * body chunks, so a receiver trickling its body a byte at a time would hold a send for as long as it likes, and
 * its headersTimeout starts only once the request is written (not while it waits for a connection). The answer's status line decides the outcome: a 2xx is a success, anything else (a redirect, which
 * is not followed, included) a failure, and so is a deadline passed before the status line or a connection
 * error. The body after it is read briefly and then cut off, so a body that never ends (200 without
 * Content-Length on a kept-alive connection) does not hold the attempt.
 */
export function createWebhookSender (options: WebhookSenderOptions): WebhookSender {
  const lookup = options.allowPrivateUrls ? unguardedLookup(options.resolve) : createGuardedLookup(options.resolve)
  const agent = new Agent({
    connections: options.connectionsPerOrigin ?? null,
    keepAliveTimeout: options.keepAliveTimeoutMs ?? 30_000,
    // Backstops only: an attempt's deadline (at most timeoutMs) aborts it first. The connect timeout also ends a
    // connection attempt that a deadline gave up on (undici settles a request waiting for its connection only
    // then), a little after that deadline so that it never takes its place.
    headersTimeout: options.timeoutMs,
    bodyTimeout: options.timeoutMs,
    connect: { timeout: options.timeoutMs + BACKSTOP_MARGIN_MS, ...(lookup === undefined ? {} : { lookup }) }
  })

  const stoppedBy = new AttemptsBySignal()

  const send = async (url: string, request: SignedRequest, signal?: AbortSignal, limitMs?: number): Promise<SendOutcome> => {
    const started = performance.now()
    const outcome = (fields: Partial<SendOutcome>): SendOutcome => ({
      succeeded: false, responseStatus: null, error: null, congested: false, timedOut: false, retryAfterSeconds: undefined,
      durationMs: Math.round(performance.now() - started), ...fields
    })
    const checked = checkUrlWithoutLookup(url, options.allowPrivateUrls)
    if ('refused' in checked) return outcome({ error: `refused: ${checked.refused}` })
    const target = checked.url
    const deadlineMs = Math.floor(Math.min(options.timeoutMs, limitMs ?? Infinity))
    // No time left (the caller's claim is about to lapse): a request started now could not be aborted in time.
    if (deadlineMs <= 0) return outcome({ error: 'timed out before sending', congested: false, timedOut: true })
    const deadlineAt = started + deadlineMs
    // One abort for the attempt: by its deadline or by the caller's signal (shutdown).
    const attempt = new AttemptAbort()
    const deadline = setTimeout(() => attempt.abort(new DeadlineError(deadlineMs)), deadlineMs)
    if (signal !== undefined) stoppedBy.add(signal, attempt)
    try {
      const response = await settledByAbort(agent.request({
        origin: target.origin,
        path: `${target.pathname}${target.search}`,
        method: 'POST',
        headers: request.headers,
        body: request.body,
        signal: attempt
      }), attempt)
      const status = response.statusCode
      await readBodyBriefly(response, deadlineAt)
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
      return outcome(describeFailure(error, attempt))
    } finally {
      clearTimeout(deadline)
      if (signal !== undefined) stoppedBy.delete(signal, attempt)
    }
  }

  return { send, close: () => agent.close() }
}

/**
 * The request's answer, or the abort's reason as soon as the attempt is aborted. undici settles a request that
 * is still waiting for its connection (connecting, or queued behind busy connections) only once the connection
 * is there (nodejs/undici#386); it is not written then, since it is aborted, but the attempt must not wait for
 * that.
 */
async function settledByAbort (request: Promise<Dispatcher.ResponseData>, attempt: AttemptAbort): Promise<Dispatcher.ResponseData> {
  let onAbort: (() => void) | undefined
  const aborted = new Promise<never>((_resolve, reject) => {
    onAbort = () => reject(attempt.reason)
    if (attempt.aborted) onAbort()
    else attempt.once('abort', onAbort)
  })
  // An answer that comes after the abort won: its body is dropped, which closes the connection.
  request.then((response) => { if (attempt.aborted) response.body.destroy() }, () => {})
  try {
    return await Promise.race([request, aborted])
  } finally {
    if (onAbort !== undefined) attempt.removeListener('abort', onAbort)
  }
}

/**
 * Reads the body after the status line for at most BODY_GRACE_MS and never past the deadline, then cuts it off
 * (undici closes the connection of a body destroyed before its end). A body delimited only by the connection's
 * close (no Content-Length, not chunked) can never end on a kept-alive connection, so it is cut off at once.
 */
async function readBodyBriefly (response: Dispatcher.ResponseData, deadlineAt: number): Promise<void> {
  const { body, headers, statusCode } = response
  // Most receivers answer with an empty body: it has ended already, and waiting for that needs no timer.
  if (statusCode === 204 || statusCode === 304 || headers['content-length'] === '0') {
    await body.dump()
    return
  }
  const endsOnlyAtClose = headers['content-length'] === undefined && headers['transfer-encoding'] === undefined
  const graceMs = Math.min(BODY_GRACE_MS, deadlineAt - performance.now())
  if (endsOnlyAtClose || graceMs <= 0) {
    body.destroy()
    return
  }
  // A timer that destroys the body rather than a signal for dump(): a destroyed body settles dump() all the same.
  const cutOff = setTimeout(() => body.destroy(), graceMs)
  try {
    await body.dump({ limit: BODY_LIMIT_BYTES })
  } finally {
    clearTimeout(cutOff)
  }
}

/** With private addresses allowed, connections resolve through `resolve` unchecked (undici's default without it). */
function unguardedLookup (resolve: Resolver | undefined): GuardedLookup | undefined {
  if (resolve === undefined) return undefined
  return (hostname, options, callback) => {
    resolve(hostname, { ...options, all: true } as LookupAllOptions, (error, addresses) => {
      if (error) return callback(error, [])
      if (options.all === true) return callback(null, addresses)
      const [first] = addresses
      if (first === undefined) return callback(Object.assign(new Error(`host ${hostname} has no address`), { code: 'ENOTFOUND' }), [])
      callback(null, first.address, first.family)
    })
  }
}

function describeFailure (error: unknown, attempt: AttemptAbort): Partial<SendOutcome> {
  if (error instanceof RefusedAddressError) return { error: `refused: ${error.message}` }
  if (attempt.reason instanceof DeadlineError) return { error: attempt.reason.message, congested: true, timedOut: true }
  if (attempt.aborted) return { error: 'aborted: worker shutting down' }
  if (error instanceof errors.HeadersTimeoutError || error instanceof errors.BodyTimeoutError || error instanceof errors.ConnectTimeoutError) {
    return { error: `timed out: ${error.message}`, congested: true, timedOut: true }
  }
  const cause = error instanceof Error && error.cause instanceof Error ? error.cause : undefined
  if (cause instanceof RefusedAddressError) return { error: `refused: ${cause.message}` }
  const message = (cause ?? (error instanceof Error ? error : undefined))?.message ?? String(error)
  return { error: `request failed: ${message}`, congested: true }
}
