import type { LookupAddress } from 'node:dns'
import diagnostics from 'node:diagnostics_channel'
import type { Socket } from 'node:net'
import t from 'tap'
import { createWebhookSender } from '../../../lib/webhooks/send.js'
import { signWebhook } from '../../../lib/webhooks/signing.js'
import { refuseWebhookUrl, type Resolver } from '../../../lib/webhooks/url-guard.js'

const PUBLIC_ADDRESS = '93.184.215.14'

/** A zero-TTL name as an attacker runs it: each question gets the next answer (the last one repeats). */
function rebindingResolver (answers: string[]): Resolver & { questions: string[] } {
  const questions: string[] = []
  const resolve = (hostname: string, _options: unknown, callback: (error: NodeJS.ErrnoException | null, addresses: LookupAddress[]) => void) => {
    questions.push(hostname)
    const address = answers[Math.min(questions.length, answers.length) - 1] ?? PUBLIC_ADDRESS
    queueMicrotask(() => callback(null, [{ address, family: address.includes(':') ? 6 : 4 }]))
  }
  return Object.assign(resolve, { questions })
}

/**
 * Watches the sockets created while the test runs: `connected` counts connections undici completed, `sockets`
 * are the sockets themselves (created before the lookup, so a refused lookup leaves one that never connected).
 */
function watchConnections (t: { teardown: (fn: () => void) => void }): { connected: number, sockets: Socket[] } {
  const watched = { connected: 0, sockets: [] as Socket[] }
  const onSocket = (message: unknown) => { watched.sockets.push((message as { socket: Socket }).socket) }
  const onConnected = () => { watched.connected++ }
  diagnostics.subscribe('net.client.socket', onSocket)
  diagnostics.subscribe('undici:client:connected', onConnected)
  t.teardown(() => {
    diagnostics.unsubscribe('net.client.socket', onSocket)
    diagnostics.unsubscribe('undici:client:connected', onConnected)
  })
  return watched
}

const request = signWebhook('msg_rebind', 'attack', '{}', ['whsec_' + Buffer.alloc(24, 7).toString('base64')])

for (const privateAddress of ['169.254.169.254', '10.0.0.5', '::ffff:127.0.0.1']) {
  t.test(`a name that answers public at creation and ${privateAddress} at send time is refused before connecting`, async (t) => {
    const resolve = rebindingResolver([PUBLIC_ADDRESS, privateAddress])
    const url = 'http://rebind.attacker.example/hook'
    t.equal(await refuseWebhookUrl(url, false, resolve), undefined, 'the check at creation sees a public address and allows the URL')

    const connections = watchConnections(t)
    const sender = createWebhookSender({ timeoutMs: 2000, allowPrivateUrls: false, connectionsPerOrigin: 2, resolve })
    t.teardown(sender.close)
    const outcome = await sender.send(url, request)
    t.match(outcome, { succeeded: false, responseStatus: null, error: new RegExp(`refused: .*non-public address \\(${privateAddress.replace(/[.:]/g, '\\$&')}\\)`) })
    t.equal(resolve.questions.length, 2, 'the name was resolved again for the connection, and that answer was the one checked')
    t.equal(connections.connected, 0, 'no connection was made')
    t.ok(connections.sockets.every((socket) => socket.remoteAddress === undefined && socket.destroyed), 'no socket got as far as an address to connect to')
  })
}

t.test('a name that resolves to a private address at creation is refused then', async (t) => {
  const resolve = rebindingResolver(['10.0.0.5'])
  t.match(await refuseWebhookUrl('http://inside.example/hook', false, resolve), /non-public address \(10\.0\.0\.5\)/)
})
