import type { FastifyInstance } from 'fastify'
import { connect, type Socket } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { buildTestApp, createOrganization, TEST_ADMIN_TOKEN } from '../../support/helpers.js'

const DECLARED_LENGTH = 100_000
// Bounds on the test's own waiting, not assertions: the server cuts the connection long before.
const MAX_TRICKLED_BYTES = 600
const TRICKLE_EVERY_MS = 50

interface Trickled {
  /** What the server sent back before it closed the connection. */
  answer: string
  /** Bytes of the request the client had sent when the server closed the connection. */
  sent: number
  /** True when the server ended the connection; false when the client gave up first. */
  closedByServer: boolean
  /** Bytes of the request the client had sent when the first byte of the answer arrived (undefined: none did). */
  sentWhenAnswered: number | undefined
}

async function listening (app: FastifyInstance): Promise<number> {
  await app.listen({ port: 0, host: '127.0.0.1' })
  const address = app.server.address()
  if (address === null || typeof address === 'string') throw new Error('no port')
  return address.port
}

/**
 * Sends `head` at once (unless `trickleHead`), then the rest of the request one byte at a time, as a slowloris
 * client does, until the server closes the connection or the bound is reached.
 */
async function trickle (port: number, head: string, { trickleHead = false } = {}): Promise<Trickled> {
  const socket: Socket = connect(port, '127.0.0.1')
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject))
  const result: Trickled = { answer: '', sent: 0, closedByServer: false, sentWhenAnswered: undefined }
  let closed = false
  socket.on('data', (chunk: Buffer) => {
    result.sentWhenAnswered ??= result.sent
    result.answer += chunk.toString()
  })
  socket.on('error', () => { closed = true })
  socket.on('end', () => { result.closedByServer = true; closed = true })
  socket.on('close', () => { closed = true })
  const pending = trickleHead ? head : ''
  if (!trickleHead) {
    socket.write(head)
    result.sent += head.length
  }
  for (let index = 0; !closed && index < MAX_TRICKLED_BYTES; index++) {
    const byte = index < pending.length ? pending[index] as string : ' '
    socket.write(byte)
    result.sent++
    await sleep(TRICKLE_EVERY_MS)
  }
  socket.destroy()
  return result
}

const requestHead = (path: string, headers: Record<string, string>, contentLength: number) =>
  `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n` +
  Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`).join('') + `Content-Length: ${contentLength}\r\n\r\n`

/** A request declaring a DECLARED_LENGTH body, with its first byte. */
const postHead = (headers: Record<string, string>, path = '/api/events') => `${requestHead(path, headers, DECLARED_LENGTH)}{`

t.test('a request without a key is refused before its body is read, and its connection closed', async (t) => {
  const app = await buildTestApp(t)
  const port = await listening(app)
  const keyless: Array<Record<string, string>> = [{}, { 'x-api-key': 'sk_not_a_key' }]
  for (const headers of keyless) {
    const { answer, sent, closedByServer } = await trickle(port, postHead(headers))
    t.match(answer, /^HTTP\/1\.1 401 /, `${JSON.stringify(headers)}: 401`)
    t.match(answer, /\r\nconnection: close\r\n/i, 'the answer says the connection closes')
    t.ok(closedByServer, 'the server closed the connection')
    t.ok(sent < DECLARED_LENGTH, `before the body was complete (${sent} of ${DECLARED_LENGTH + 100} bytes sent)`)
  }
})

t.test('key generation with a missing or wrong X-Admin-Token is refused before its body is read, and its connection closed', async (t) => {
  // The test apps have ADMIN_TOKEN set (TEST_ADMIN_TOKEN).
  const app = await buildTestApp(t)
  const port = await listening(app)
  const refused: Array<Record<string, string>> = [{}, { 'x-admin-token': 'not-the-admin-token-0123456789' }, { 'x-admin-token': '' }]
  for (const headers of refused) {
    const head = postHead(headers, '/api/keys/generate')
    const { answer, sent, closedByServer, sentWhenAnswered } = await trickle(port, head)
    const label = JSON.stringify(headers)
    t.match(answer, /^HTTP\/1\.1 401 /, `${label}: 401`)
    t.match(answer, /"code":"invalid_admin_token"/, `${label}: invalid_admin_token`)
    t.match(answer, /\r\nconnection: close\r\n/i, 'the answer says the connection closes')
    t.ok(closedByServer, 'the server closed the connection')
    // The body can never have been complete: the client was still holding back most of it when the answer came.
    t.ok(sentWhenAnswered !== undefined && sentWhenAnswered < head.length - 1 + DECLARED_LENGTH,
      `answered while the body was incomplete (${String(sentWhenAnswered)} of ${head.length - 1 + DECLARED_LENGTH} bytes sent)`)
    t.ok(sent < head.length - 1 + DECLARED_LENGTH, 'and closed before the client sent the rest')
  }
})

t.test('key generation with the right X-Admin-Token waits for its trickled body, then creates the key', async (t) => {
  const app = await buildTestApp(t)
  const port = await listening(app)
  const body = JSON.stringify({ organization_name: `trickled-${Date.now()}` })
  const socket = connect(port, '127.0.0.1')
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject))
  t.teardown(() => socket.destroy())
  let received = ''
  let answeredEarly = false
  let bodySent = false
  socket.on('data', (chunk: Buffer) => {
    if (!bodySent) answeredEarly = true
    received += chunk.toString()
  })
  socket.write(requestHead('/api/keys/generate', { 'x-admin-token': TEST_ADMIN_TOKEN }, Buffer.byteLength(body)))
  for (const byte of body) {
    await sleep(TRICKLE_EVERY_MS / 5)
    socket.write(byte)
  }
  bodySent = true
  for (let waited = 0; !/\r\n\r\n\{.*\}/s.test(received) && waited < 200; waited++) await sleep(TRICKLE_EVERY_MS)
  t.notOk(answeredEarly, 'nothing was answered before the last byte of the body was sent')
  t.match(received, /^HTTP\/1\.1 201 /, 'the key is created from the whole body')
  t.notMatch(received, /\r\nconnection: close\r\n/i, 'on a connection kept alive')
})

t.test('a refused X-Admin-Token still counts against its address\'s budget', async (t) => {
  const app = await buildTestApp(t, { RATE_LIMIT_ANONYMOUS: '2' })
  const generate = (adminToken: string) => app.inject({
    method: 'POST', url: '/api/keys/generate', headers: { 'x-admin-token': adminToken }, payload: { organization_name: 'budget' }
  })
  const statuses: number[] = []
  for (let i = 0; i < 2; i++) statuses.push((await generate('not-the-admin-token-0123456789')).statusCode)
  statuses.push((await generate(TEST_ADMIN_TOKEN)).statusCode)
  t.same(statuses, [401, 401, 429], 'the wrong tokens spent the budget, so even the right one waits')
})

t.test('a trickling body with a valid key is cut at REQUEST_TIMEOUT_MS', async (t) => {
  const app = await buildTestApp(t, { REQUEST_TIMEOUT_MS: '1000', REQUEST_HEADERS_TIMEOUT_MS: '500' })
  const organization = await createOrganization(app)
  const port = await listening(app)
  const { answer, sent, closedByServer } = await trickle(port, postHead(organization.headers))
  t.match(answer, /^HTTP\/1\.1 408 /, 'the server answers 408 Request Timeout')
  t.ok(closedByServer, 'and closes the connection')
  t.ok(sent < DECLARED_LENGTH, `before the body was complete (${sent} bytes sent)`)
})

t.test('trickling headers are cut at REQUEST_HEADERS_TIMEOUT_MS', async (t) => {
  const app = await buildTestApp(t, { REQUEST_TIMEOUT_MS: '60000', REQUEST_HEADERS_TIMEOUT_MS: '500' })
  const port = await listening(app)
  const head = 'GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n' + 'X-Padding: ' + 'x'.repeat(1000) + '\r\n\r\n'
  const { answer, closedByServer } = await trickle(port, head, { trickleHead: true })
  t.ok(closedByServer, 'the server closed the connection before the headers were complete')
  t.notMatch(answer, /^HTTP\/1\.1 200 /, 'the request was never answered as complete')
})

t.test('a request whose body arrives in time is served on a kept-alive connection', async (t) => {
  const app = await buildTestApp(t, { REQUEST_TIMEOUT_MS: '1000', REQUEST_HEADERS_TIMEOUT_MS: '500' })
  const organization = await createOrganization(app)
  const port = await listening(app)
  const response = await fetch(`http://127.0.0.1:${port}/api/events`, {
    method: 'POST',
    headers: { ...organization.headers, 'content-type': 'application/json' },
    body: JSON.stringify({ type: 'slow.test', payload: {} })
  })
  t.equal(response.status, 201)
  t.not(response.headers.get('connection'), 'close')
  const refused = await fetch(`http://127.0.0.1:${port}/api/events`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ type: 'slow.test', payload: {} })
  })
  t.equal(refused.status, 401, 'a keyless request is refused whether or not its body has arrived')
})

t.test('a keyless request whose body came with it is refused on a connection kept alive', async (t) => {
  const app = await buildTestApp(t)
  const port = await listening(app)
  const socket = connect(port, '127.0.0.1')
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject))
  let received = ''
  socket.on('data', (chunk: Buffer) => { received += chunk.toString() })
  const body = JSON.stringify({ type: 'keep.alive', payload: { filler: 'x'.repeat(1000) } })
  // Headers and body in one write, as most clients send a small request.
  socket.write(`POST /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`)
  for (let waited = 0; !/\r\n\r\n\{[^}]*\}/.test(received) && waited < 200; waited++) await sleep(TRICKLE_EVERY_MS)
  t.match(received, /^HTTP\/1\.1 401 /)
  t.notMatch(received, /\r\nconnection: close\r\n/i, 'the connection is kept: nothing of the request was left unread')
  socket.write('GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')
  for (let waited = 0; !/HTTP\/1\.1 200 /.test(received) && waited < 200; waited++) await sleep(TRICKLE_EVERY_MS)
  t.match(received, /HTTP\/1\.1 200 /, 'and serves the next request')
  socket.destroy()
})
