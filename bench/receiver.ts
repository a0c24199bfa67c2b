import { once } from 'node:events'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { performance } from 'node:perf_hooks'

/** Milliseconds since the epoch with sub-millisecond resolution; the sender and the receiver share this clock. */
export const nowMs = (): number => performance.timeOrigin + performance.now()

/** Longer than any pause in a scenario, so the worker's pooled connections are not closed under it. */
const KEEP_ALIVE_MS = 120_000

interface Receipt {
  count: number
  /** Receive time − the event's `sent_at_ms`, of the first arrival; undefined when the payload had none. */
  latencyMs: number | undefined
}

/** One endpoint (a path of the receiver): every webhook-id it was sent, how often, and when. */
export class ReceiverEndpoint {
  private readonly receipts = new Map<string, Receipt>()
  /** Arrival times of the first and the last new (event, endpoint) pair. */
  firstAtMs: number | undefined
  lastAtMs: number | undefined
  duplicates = 0
  /** Requests without a webhook-id header or with a body that is not the expected JSON. */
  malformed = 0
  /** How long the endpoint waits before answering 204; can change while a scenario runs. */
  delayMs = 0

  constructor (readonly url: string) {}

  record (eventId: string | undefined, receivedAtMs: number, body: string): void {
    const sentAtMs = eventId === undefined ? undefined : sentAtOf(body)
    if (eventId === undefined || sentAtMs === null) {
      this.malformed++
      return
    }
    const receipt = this.receipts.get(eventId)
    if (receipt !== undefined) {
      receipt.count++
      this.duplicates++
      return
    }
    this.receipts.set(eventId, { count: 1, latencyMs: sentAtMs === undefined ? undefined : receivedAtMs - sentAtMs })
    this.firstAtMs ??= receivedAtMs
    this.lastAtMs = receivedAtMs
  }

  /** Distinct events received (duplicates not counted). */
  get deliveries (): number {
    return this.receipts.size
  }

  has (eventId: string): boolean {
    return this.receipts.has(eventId)
  }

  eventIds (): IterableIterator<string> {
    return this.receipts.keys()
  }

  latencies (): number[] {
    return [...this.receipts.values()].flatMap((receipt) => receipt.latencyMs === undefined ? [] : [receipt.latencyMs])
  }
}

/** `data.sent_at_ms` of a webhook body: a number, undefined when absent, null when the body is not the webhook JSON. */
function sentAtOf (body: string): number | undefined | null {
  try {
    const parsed = JSON.parse(body) as { data?: { sent_at_ms?: unknown } }
    const sentAt = parsed.data?.sent_at_ms
    return typeof sentAt === 'number' ? sentAt : undefined
  } catch {
    return null
  }
}

export interface Receiver {
  /** A new recorded endpoint at its own path (names must be unique within the run). */
  endpoint: (name: string) => ReceiverEndpoint
  /** Base URL; paths that are not a recorded endpoint answer 204 without recording anything. */
  url: string
  close: () => void
}

/** The webhook receiver on loopback, in the bench process: node:http with keep-alive, answering 204. */
export async function startReceiver (): Promise<Receiver> {
  const endpoints = new Map<string, ReceiverEndpoint>()
  const delayed = new Set<NodeJS.Timeout>()
  const answer = (response: ServerResponse, delayMs: number) => {
    if (delayMs <= 0) {
      response.writeHead(204).end()
      return
    }
    const timer = setTimeout(() => {
      delayed.delete(timer)
      response.writeHead(204).end()
    }, delayMs)
    delayed.add(timer)
  }
  const server = createServer((request: IncomingMessage, response: ServerResponse) => {
    const receivedAtMs = nowMs()
    const endpoint = endpoints.get(request.url ?? '')
    if (endpoint === undefined) {
      request.resume()
      request.on('end', () => answer(response, 0))
      return
    }
    const chunks: Buffer[] = []
    request.on('data', (chunk: Buffer) => chunks.push(chunk))
    request.on('end', () => {
      const eventId = request.headers['webhook-id']
      endpoint.record(typeof eventId === 'string' ? eventId : undefined, receivedAtMs, Buffer.concat(chunks).toString('utf8'))
      answer(response, endpoint.delayMs)
    })
  })
  server.keepAliveTimeout = KEEP_ALIVE_MS
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('receiver has no port')
  const url = `http://127.0.0.1:${address.port}`
  return {
    url,
    endpoint: (name) => {
      const path = `/${name}`
      if (endpoints.has(path)) throw new Error(`receiver endpoint ${name} exists already`)
      const endpoint = new ReceiverEndpoint(`${url}${path}`)
      endpoints.set(path, endpoint)
      return endpoint
    },
    close: () => {
      for (const timer of delayed) clearTimeout(timer)
      server.closeAllConnections()
      server.close()
    }
  }
}
