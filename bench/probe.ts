import http from 'node:http'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'

/**
 * The overload scenario's paced probe: forked by bench/probe-client.ts so that its clock and event loop are not
 * the flood's (autocannon's queueing would count in its latencies otherwise). It opens a few kept-alive connections,
 * waits for the word, then sends one prepared body every `intervalMs` whatever the answers before it (a slow
 * answer must not delay the next probe and hide itself), and reports each probe's status, its latency from
 * send to the last byte of its answer, and whether it went on a kept-alive connection or had to open one (when
 * every connection is busy or was asked by a 503 to wait; a new one waits in the server's listen queue).
 */

/** What the parent sends first: where to send, and the bodies in their order. */
export interface ProbePlan {
  origin: string
  path: string
  apiKey: string
  bodies: string[]
  intervalMs: number
  /** Wait after the start before the first probe, so the flood is at full strength. */
  leadMs: number
  /** Opened before the flood, kept alive. */
  connections: number
  /** At most, when all are busy with slow answers: a probe then opens one more rather than queue behind them. */
  maxConnections: number
  timeoutMs: number
}

export interface ProbeAnswer {
  /** 0 when no answer came (socket error or time-out). */
  status: number
  /**
   * From the send to the last byte of the answer. On a new connection this includes its handshake and the time
   * it waited in the server's listen queue (the handshake completes before the server accepts it).
   */
  latencyMs: number
  /** The part of it before the request was written: a new connection's handshake, or the wait for a free one. */
  waitMs: number
  /** How late the probe left against its schedule: the probe process's own delay. */
  sendLagMs: number
  /** Whether it went on a kept-alive connection rather than a new one. */
  reused: boolean
  body: string
  error?: string
}

export type ParentMessage = { type: 'plan', plan: ProbePlan } | { type: 'start' }
/** waiting: listening for the plan (a message sent before a listener exists is lost); ready: connections open. */
export type ProbeMessage = { type: 'waiting' } | { type: 'ready' } | { type: 'done', answers: ProbeAnswer[] }

type Sent = Omit<ProbeAnswer, 'sendLagMs'>

function isParentMessage (message: unknown): message is ParentMessage {
  return typeof message === 'object' && message !== null && 'type' in message && (message.type === 'start' || (message.type === 'plan' && 'plan' in message))
}

function nextMessage (): Promise<ParentMessage> {
  return new Promise((resolve) => {
    const listener = (message: unknown) => {
      if (!isParentMessage(message)) return
      process.off('message', listener)
      resolve(message)
    }
    process.on('message', listener)
  })
}

function tell (message: ProbeMessage): Promise<void> {
  return new Promise((resolve, reject) => {
    if (process.send === undefined) reject(new Error('bench/probe.js runs forked by bench/probe-client.js'))
    else process.send(message, undefined, {}, (error) => { if (error) reject(error); else resolve() })
  })
}

/**
 * The probe's connections, one kept-alive agent each. A probe takes a free one that was not asked to wait (a 503's
 * Retry-After holds for the connection it came on, as the server holds it: lib/overload.ts), or opens another, up
 * to the plan's maximum; beyond it, it waits for the first connection to come free.
 */
class Connections {
  private readonly free: Array<{ agent: http.Agent, readyAt: number }> = []
  private readonly waiting: Array<(agent: http.Agent) => void> = []
  private opened = 0
  constructor (private readonly plan: ProbePlan) {}

  /** Opens the plan's first connections (before the flood), each with a request of its own. */
  async open (): Promise<void> {
    await Promise.all(Array.from({ length: this.plan.connections }, () => new Promise<void>((resolve, reject) => {
      const agent = this.newAgent()
      http.get(`${this.plan.origin}/health`, { agent }, (response) => {
        response.resume()
        response.on('end', () => { this.give(agent, 0); resolve() })
      }).on('error', reject)
    })))
  }

  async take (): Promise<http.Agent> {
    const now = performance.now()
    const index = this.free.findIndex((connection) => connection.readyAt <= now)
    const ready = index >= 0 ? this.free.splice(index, 1)[0] : undefined
    if (ready !== undefined) return ready.agent
    if (this.opened < this.plan.maxConnections) return this.newAgent()
    return await new Promise((resolve) => this.waiting.push(resolve))
  }

  /** Back after an answer; not to be used for `retryAfterSeconds`. A connection without an answer is closed. */
  give (agent: http.Agent, retryAfterSeconds: number | undefined): void {
    if (retryAfterSeconds === undefined) {
      agent.destroy()
      this.opened--
    } else {
      const waiter = retryAfterSeconds === 0 ? this.waiting.shift() : undefined
      if (waiter !== undefined) waiter(agent)
      else this.free.push({ agent, readyAt: performance.now() + retryAfterSeconds * 1000 })
    }
  }

  close (): void {
    for (const { agent } of this.free.splice(0)) agent.destroy()
  }

  private newAgent (): http.Agent {
    this.opened++
    return new http.Agent({ keepAlive: true, maxSockets: 1 })
  }
}

/** When the request goes onto its socket: at once on a kept-alive one, after the handshake on a new one. */
function whenWritten (request: http.ClientRequest, mark: () => void): void {
  request.on('socket', (socket) => {
    if (socket.connecting) socket.once('connect', mark)
    else mark()
  })
}

async function send (connections: Connections, plan: ProbePlan, body: string): Promise<Sent> {
  const sent = performance.now()
  const agent = await connections.take()
  return await new Promise((resolve) => {
    let written: number | undefined
    let retryAfter = 0
    let finished = false
    const finish = (status: number, text: string, error?: string) => {
      if (finished) return
      finished = true
      const now = performance.now()
      const timing = { waitMs: (written ?? now) - sent, latencyMs: now - sent, reused: request.reusedSocket }
      connections.give(agent, status === 0 ? undefined : retryAfter)
      resolve({ status, body: text, ...timing, ...(error === undefined ? {} : { error }) })
    }
    const request = http.request(`${plan.origin}${plan.path}`, {
      method: 'POST',
      agent,
      timeout: plan.timeoutMs,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'x-api-key': plan.apiKey }
    }, (response) => {
      retryAfter = Number(response.headers['retry-after'] ?? 0) || 0
      const chunks: Buffer[] = []
      response.on('data', (chunk: Buffer) => { chunks.push(chunk) })
      response.on('end', () => { finish(response.statusCode ?? 0, Buffer.concat(chunks).toString('utf8')) })
      response.on('error', (error) => { finish(0, '', error.message) })
    })
    whenWritten(request, () => { written ??= performance.now() })
    request.on('timeout', () => request.destroy(new Error(`no answer within ${plan.timeoutMs} ms`)))
    request.on('error', (error) => { finish(0, '', error.message) })
    request.end(body)
  })
}

async function sendAt (connections: Connections, plan: ProbePlan, body: string, at: number): Promise<ProbeAnswer> {
  await sleep(Math.max(0, at - performance.now()))
  const sendLagMs = performance.now() - at
  return { ...await send(connections, plan, body), sendLagMs }
}

/** Every probe on a fixed schedule from the start (open loop): each has its own timer, none waits for another. */
function pace (connections: Connections, plan: ProbePlan): Promise<ProbeAnswer[]> {
  const first = performance.now() + plan.leadMs
  return Promise.all(plan.bodies.map((body, index) => sendAt(connections, plan, body, first + index * plan.intervalMs)))
}

async function main (): Promise<void> {
  const planned = nextMessage()
  await tell({ type: 'waiting' })
  const message = await planned
  if (message.type !== 'plan') throw new Error('bench/probe.js: expected the plan first')
  const { plan } = message
  const connections = new Connections(plan)
  await connections.open()
  const started = nextMessage()
  await tell({ type: 'ready' })
  await started
  const answers = await pace(connections, plan)
  await tell({ type: 'done', answers })
  connections.close()
  process.disconnect()
}

main().catch((error: unknown) => {
  console.error('bench/probe.js:', error instanceof Error ? error.message : error)
  process.exit(1)
})
