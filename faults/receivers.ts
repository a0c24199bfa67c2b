import { once } from 'node:events'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'

/** How a receiver answers: 204 (after `delayMs`), 500, never (past the worker's timeout), or a TCP reset. */
export type Behaviour = 'ok' | 'error500' | 'hang' | 'reset'

/**
 * A loopback webhook receiver in the suite's process. It counts every request per `webhook-id` (the event id,
 * the same on every retry) when it arrives, before answering: a send the worker never saw finish (it was
 * killed) still counts, which is exactly what makes a redelivery a duplicate.
 */
export class Receiver {
  readonly arrivals = new Map<string, number>()
  /** Requests currently being answered (sends in flight, for the healthy receiver). */
  inFlight = 0
  /** How long the healthy receiver takes to answer; raised while the worker is killed mid-send. */
  delayMs = 0
  /** When the last request arrived (ms since the epoch): the worker was busy then. */
  lastArrivalAt: number | undefined
  private readonly waiters = new Map<string, () => void>()

  private constructor (readonly behaviour: Behaviour, private readonly server: Server, readonly url: string) {}

  static async start (behaviour: Behaviour): Promise<Receiver> {
    let receiver: Receiver | undefined
    const server = createServer((request, response) => receiver?.handle(request, response))
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    const address = server.address()
    if (address === null || typeof address === 'string') throw new Error('receiver has no port')
    receiver = new Receiver(behaviour, server, `http://127.0.0.1:${address.port}/hook/${behaviour}`)
    return receiver
  }

  get requests (): number {
    let total = 0
    for (const count of this.arrivals.values()) total += count
    return total
  }

  /** Events that arrived more than once, and how many extra requests that made. */
  duplicatesAmong (eventIds: Iterable<string>): number {
    let extra = 0
    for (const id of eventIds) extra += Math.max(0, (this.arrivals.get(id) ?? 0) - 1)
    return extra
  }

  /** Milliseconds until `eventId` arrives (0 if it already has), or undefined after `timeoutMs`. */
  async waitFor (eventId: string, timeoutMs: number): Promise<number | undefined> {
    if (this.arrivals.has(eventId)) return 0
    const started = Date.now()
    return await new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiters.delete(eventId)
        resolve(undefined)
      }, timeoutMs)
      this.waiters.set(eventId, () => {
        clearTimeout(timer)
        resolve(Date.now() - started)
      })
    })
  }

  async close (): Promise<void> {
    // Hanging requests would keep close() waiting for ever.
    this.server.closeAllConnections()
    this.server.close()
    await once(this.server, 'close')
  }

  private handle (request: IncomingMessage, response: ServerResponse): void {
    const header = request.headers['webhook-id']
    const eventId = typeof header === 'string' ? header : 'missing'
    this.arrivals.set(eventId, (this.arrivals.get(eventId) ?? 0) + 1)
    this.lastArrivalAt = Date.now()
    this.waiters.get(eventId)?.()
    this.waiters.delete(eventId)
    request.resume()
    if (this.behaviour === 'ok') this.answerLater(response)
    else if (this.behaviour === 'error500') response.writeHead(500).end()
    else if (this.behaviour === 'reset') request.socket.resetAndDestroy()
    // 'hang': never answered; the worker's timeout ends the attempt and closes the connection.
  }

  private answerLater (response: ServerResponse): void {
    this.inFlight++
    response.once('close', () => { this.inFlight-- })
    const answer = () => { if (!response.destroyed) response.writeHead(204).end() }
    if (this.delayMs === 0) answer()
    else setTimeout(answer, this.delayMs)
  }
}
