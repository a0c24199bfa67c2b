import { createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { Teardown } from './helpers.js'

/** One request as a scripted receiver got it, and what became of its connection. */
export interface ScriptedRequest {
  path: string
  headers: IncomingHttpHeaders
  body: string
  socket: Socket
  response: ServerResponse
  /** Bytes of a raw answer (trickle, endlessBody) written so far. */
  written: number
  /** Set when the connection has closed. */
  closed: boolean
  /** The connection was closed from the sender's side (the receiver itself never closes one before teardown). */
  closedBySender: boolean
  /** The receiver finished its answer (a complete response). */
  answered: boolean
}

export interface ScriptedReceiver {
  /** http://127.0.0.1:port */
  origin: string
  url: (path: string) => string
  requests: ScriptedRequest[]
  /** Decides each answer; the default answers 200 with a two-byte body. */
  answer: (request: ScriptedRequest) => void
  /** Connections open on the receiver's side now. */
  openSockets: () => number
  /** Requests received and neither answered nor cut off. */
  unanswered: () => ScriptedRequest[]
}

/** A status line and headers of a 200 answer whose two-byte body follows them. */
export const OK_HEAD = 'HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nCache-Control: no-store\r\nContent-Length: 2\r\n\r\n'

export const answerOk = (request: ScriptedRequest): void => {
  request.response.writeHead(200, { 'content-type': 'text/plain', 'content-length': '2' }).end('ok')
}

/**
 * Writes `text` to the connection one byte every `everyMs` (a raw answer, under the HTTP server's nose), until
 * it is all written or the connection closes.
 */
export function trickle (request: ScriptedRequest, text: string, everyMs: number): void {
  const timer = setInterval(() => {
    if (request.closed || request.written >= text.length) {
      clearInterval(timer)
      return
    }
    request.socket.write(text[request.written] ?? '')
    request.written++
  }, everyMs)
  request.socket.once('close', () => clearInterval(timer))
}

/** A 200 on the kept-alive connection without Content-Length or chunking: its body ends only when the connection does. */
export function endlessBody (request: ScriptedRequest): void {
  const answer = 'HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Type: text/plain\r\n\r\nreceived'
  request.socket.write(answer)
  request.written = answer.length
}

/** A real HTTP receiver on loopback whose answers a test scripts; closed, with every connection, when the test ends. */
export async function startScriptedReceiver (t: Teardown): Promise<ScriptedReceiver> {
  const sockets = new Set<Socket>()
  let closing = false
  const receiver: ScriptedReceiver = {
    origin: '',
    url: (path) => `${receiver.origin}${path}`,
    requests: [],
    answer: answerOk,
    openSockets: () => sockets.size,
    unanswered: () => receiver.requests.filter((request) => !request.answered && !request.closed)
  }
  const server = createServer((incoming, response) => {
    const chunks: Buffer[] = []
    incoming.on('data', (chunk: Buffer) => chunks.push(chunk))
    incoming.on('end', () => {
      const request: ScriptedRequest = {
        path: incoming.url ?? '',
        headers: incoming.headers,
        body: Buffer.concat(chunks).toString(),
        socket: incoming.socket,
        response,
        written: 0,
        closed: incoming.socket.destroyed,
        closedBySender: false,
        answered: false
      }
      response.once('finish', () => { request.answered = true })
      // Whoever closes first: the receiver closes only at teardown, so an end or reset before then is the sender's.
      const bySender = () => { if (!closing) request.closedBySender = true }
      incoming.socket.once('end', bySender)
      incoming.socket.once('error', bySender)
      incoming.socket.once('close', () => { request.closed = true })
      receiver.requests.push(request)
      receiver.answer(request)
    })
  })
  server.on('connection', (socket: Socket) => {
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('no port')
  receiver.origin = `http://127.0.0.1:${address.port}`
  t.teardown(() => new Promise<void>((resolve) => {
    closing = true
    server.closeAllConnections()
    server.close(() => resolve())
  }))
  return receiver
}
