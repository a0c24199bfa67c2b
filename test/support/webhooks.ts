import type { FastifyInstance } from 'fastify'
import { createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http'
import { setTimeout as sleep } from 'node:timers/promises'
import pg from 'pg'
import type { Teardown, TestOrganization } from './helpers.js'

export interface ReceivedRequest {
  headers: IncomingHttpHeaders
  body: string
}

export interface Receiver {
  url: string
  received: ReceivedRequest[]
  /** Decides each answer; the default answers 200. */
  respond: (request: ReceivedRequest, response: ServerResponse, index: number) => void
}

/** A real HTTP receiver on loopback, closed (with every socket) when the test ends. */
export async function startReceiver (t: Teardown): Promise<Receiver> {
  const receiver: Receiver = {
    url: '',
    received: [],
    respond: (_request, response) => { response.writeHead(200).end('ok') }
  }
  const server = createServer((request, response) => {
    const chunks: Buffer[] = []
    request.on('data', (chunk: Buffer) => chunks.push(chunk))
    request.on('end', () => {
      const received = { headers: request.headers, body: Buffer.concat(chunks).toString() }
      receiver.received.push(received)
      receiver.respond(received, response, receiver.received.length - 1)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('no port')
  receiver.url = `http://127.0.0.1:${address.port}/hook`
  t.teardown(() => new Promise<void>((resolve) => {
    server.closeAllConnections()
    server.close(() => resolve())
  }))
  return receiver
}

/** Polls `check` until it returns true; fails after `limitMs` (a bound on waiting, not a timing assertion). */
export async function waitFor (what: string, check: () => Promise<boolean> | boolean, limitMs = 30_000): Promise<void> {
  const deadline = Date.now() + limitMs
  while (!await check()) {
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}`)
    await sleep(100)
  }
}

export async function createWebhook (t: Teardown, app: FastifyInstance, organization: TestOrganization, body: object): Promise<{ id: string, secret: string }> {
  const response = await app.inject({ method: 'POST', url: '/api/webhooks', headers: organization.headers, payload: body })
  if (response.statusCode !== 201) throw new Error(`webhook creation failed: ${response.body}`)
  const webhook = response.json<{ id: string, secret: string }>()
  // Deleting the endpoint removes its deliveries, so no later test's worker sends them anywhere.
  t.teardown(() => deleteWebhookRow(app.config.DATABASE_URL ?? process.env.DATABASE_URL, webhook.id))
  return webhook
}

/** The event's push state (delivery_status). */
export async function deliveryStatus (app: FastifyInstance, organization: TestOrganization, eventId: string): Promise<string> {
  const response = await app.inject({ method: 'GET', url: `/api/events/${eventId}`, headers: organization.headers })
  return response.json<{ delivery_status: string }>().delivery_status
}

/** On a connection of its own, in the app's database: the app may be closed before this teardown runs. */
async function deleteWebhookRow (databaseUrl: string | undefined, id: string): Promise<void> {
  const client = new pg.Client({ connectionString: databaseUrl })
  await client.connect()
  try {
    await client.query('DELETE FROM webhooks WHERE id = $1', [id])
  } finally {
    await client.end()
  }
}
