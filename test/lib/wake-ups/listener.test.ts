import t from 'tap'
import { randomUUID } from 'node:crypto'
import { once } from 'node:events'
import { connect, createServer, type Server, type Socket } from 'node:net'
import pg from 'pg'
import { createListener, type ListeningConnection } from '../../../lib/wake-ups/listener.js'
import { freePort } from '../../support/free-port.js'
import { directDatabaseUrl, type Teardown } from '../../support/helpers.js'
import { waitFor } from '../../support/webhooks.js'

/** The suite's server itself (LISTEN needs a session of its own, not a pooler's). */
const serverUrl = new URL(directDatabaseUrl(process.env.DATABASE_URL as string))

/**
 * A TCP relay to the database on a port of its own, which the test can keep closed (the database is down), and
 * whose connections it can freeze: bytes stop flowing both ways but nothing is closed, as when a network path
 * dies silently.
 */
interface Relay {
  /** The database URL through the relay. */
  url: string
  open: () => Promise<void>
  /** Stops the traffic of every connection open now; later connections flow. */
  freeze: () => void
  /** Connections accepted so far. */
  readonly accepted: number
}

async function startRelay (t: Teardown): Promise<Relay> {
  const port = await freePort()
  const pairs: Array<[Socket, Socket]> = []
  let server: Server | undefined
  let accepted = 0
  t.teardown(async () => {
    for (const [client, upstream] of pairs) {
      client.destroy()
      upstream.destroy()
    }
    if (server) await new Promise((resolve) => server?.close(resolve))
  })
  const url = new URL(serverUrl)
  url.hostname = '127.0.0.1'
  url.port = String(port)
  return {
    url: url.toString(),
    get accepted () { return accepted },
    open: async () => {
      server = createServer((client) => {
        accepted++
        const upstream = connect(Number(serverUrl.port || 5432), serverUrl.hostname || '127.0.0.1')
        pairs.push([client, upstream])
        client.pipe(upstream)
        upstream.pipe(client)
        client.on('error', () => upstream.destroy())
        upstream.on('error', () => client.destroy())
      })
      server.listen(port, '127.0.0.1')
      await once(server, 'listening')
    },
    freeze: () => {
      for (const [client, upstream] of pairs) {
        client.unpipe(upstream)
        upstream.unpipe(client)
        client.pause()
        upstream.pause()
      }
    }
  }
}

function recordingLog () {
  const warnings: string[] = []
  const infos: string[] = []
  return { warnings, infos, log: { warn: (_details: object, message: string) => { warnings.push(message) }, info: (message: string) => { infos.push(message) } } }
}

/** Sends NOTIFY `payload` on `channel` from a connection of its own, straight to the database. */
async function notify (channel: string, payload: string): Promise<void> {
  const client = new pg.Client({ connectionString: serverUrl.toString() })
  await client.connect()
  try {
    await client.query('SELECT pg_notify($1, $2)', [channel, payload])
  } finally {
    await client.end()
  }
}

/** Listens on a fresh channel; resolves the payloads heard so far, and waits for one. */
function hear (listener: ListeningConnection) {
  const channel = `listener_test_${randomUUID().replaceAll('-', '')}`
  const heard: string[] = []
  listener.listen(channel, (payload) => heard.push(payload))
  return {
    heard,
    /** NOTIFYs `payload` and waits until the listener hears it. */
    roundTrip: async (payload: string) => {
      await notify(channel, payload)
      await waitFor(`the listener to hear ${payload}`, () => heard.includes(payload))
    }
  }
}

t.test('a connection that stops answering pings is dropped and replaced, and notifications flow again', async (t) => {
  const relay = await startRelay(t)
  await relay.open()
  const { warnings, log } = recordingLog()
  const listener = createListener({ connectionString: relay.url, applicationName: 'listener-test', log, pingIntervalMs: 200, pingTimeoutMs: 500, reconnectDelayMs: 50 })
  t.teardown(() => listener.close())
  let connects = 0
  listener.onConnect(() => { connects++ })
  const channel = hear(listener)
  await listener.start()
  t.ok(listener.connected, 'connected')
  t.equal(connects, 1)
  await channel.roundTrip('before')
  t.same(warnings, [], 'pings are answered while the path is alive')

  relay.freeze()
  await waitFor('the silent connection to be given up', () => warnings.includes('notification listener stopped answering; reconnecting'))
  await waitFor('a new connection', () => connects === 2 && listener.connected)
  t.equal(relay.accepted, 2, 'over a new connection')
  await channel.roundTrip('after')
  t.same(channel.heard, ['before', 'after'], 'channels are listened on again')
})

t.test('started while the database is down, the listener keeps trying and connects once it is back', async (t) => {
  const relay = await startRelay(t)
  const { warnings, infos, log } = recordingLog()
  const listener = createListener({ connectionString: relay.url, applicationName: 'listener-test', log, reconnectDelayMs: 50, maxReconnectDelayMs: 200 })
  t.teardown(() => listener.close())
  let connects = 0
  listener.onConnect(() => { connects++ })
  const channel = hear(listener)
  await listener.start()
  t.notOk(listener.connected, 'start-up does not fail; the listener is down')
  t.equal(connects, 0)
  t.same(warnings, ['notification listener could not connect; retrying in the background'])
  await waitFor('a retry in the background', () => warnings.includes('notification listener could not connect; retrying'))

  await relay.open()
  await waitFor('the listener to connect', () => listener.connected)
  t.equal(connects, 1, 'its connect handlers run once')
  t.ok(infos.includes('notification listener connected'))
  await channel.roundTrip('back')
  t.same(channel.heard, ['back'], 'the channel subscribed before start-up is listened on')

  await listener.close()
  t.notOk(listener.connected, 'closed')
})
