import type { FastifyInstance } from 'fastify'
import { Webhook } from 'standardwebhooks'
import t from 'tap'
import { inTransaction } from '../../../db/transaction.js'
import { createSecretBox, parseSecretKeys } from '../../../lib/webhooks/secret-box.js'
import { createWebhookSecret } from '../../../lib/webhooks/signing.js'
import { resealWebhookSecrets } from '../../../lib/webhooks/secret-reseal.js'
import { buildTestApp, createOrganization, TEST_SECRET_KEYS, type TestOrganization } from '../../support/helpers.js'
import { createWebhook, startReceiver, waitFor, type Receiver } from '../../support/webhooks.js'

const [KEY_A = '', KEY_B = ''] = TEST_SECRET_KEYS

const storedSecrets = async (app: FastifyInstance, id: string) =>
  (await app.pg.query<{ secret: string, previous_secret: string | null }>('SELECT secret, previous_secret FROM webhooks WHERE id = $1', [id])).rows[0]

/** Sends a webhook.test through the app: whether it arrived and the receiver can verify it with every one of `secrets`. */
async function verifiesWith (app: FastifyInstance, organization: TestOrganization, receiver: Receiver, webhookId: string, secrets: string[]): Promise<boolean> {
  const before = receiver.received.length
  const tested = await app.inject({ method: 'POST', url: `/api/webhooks/${webhookId}/test`, headers: organization.headers })
  const request = receiver.received[before]
  if (tested.json().success !== true || !request) return false
  const headers = Object.fromEntries(['webhook-id', 'webhook-timestamp', 'webhook-signature'].map((name) => [name, String(request.headers[name])]))
  return secrets.every((secret) => {
    try {
      new Webhook(secret).verify(request.body, headers)
      return true
    } catch {
      return false
    }
  })
}

t.test('secret keys are validated, and sealed secrets are authenticated', async (t) => {
  t.throws(() => parseSecretKeys('k1:short'), { message: /WEBHOOK_SECRET_KEYS entry 1/ })
  t.throws(() => parseSecretKeys(`${KEY_A},${KEY_A}`), { message: /twice/ })
  const box = createSecretBox(`${KEY_B},${KEY_A}`)
  const secret = createWebhookSecret()
  const sealed = box.seal(secret)
  t.match(sealed, /^enc:v1:test-b:/)
  t.notOk(sealed.includes(secret.slice(6)))
  t.equal(box.open(sealed), secret)
  t.equal(createSecretBox(KEY_A).open(createSecretBox(KEY_A).seal(secret)), secret)
  t.equal(box.open(secret), secret, 'plain secrets (written before encryption) are read as they are')
  const tampered = sealed.slice(0, -4) + (sealed.endsWith('AAAA') ? 'BBBB' : 'AAAA')
  t.throws(() => box.open(tampered), 'a modified value does not decrypt')
  t.throws(() => createSecretBox(KEY_A).open(sealed), { message: /key "test-b", which is not in WEBHOOK_SECRET_KEYS/ })
})

t.test('a database reader sees no signing secret, and deliveries are still signed with it', async (t) => {
  const app = await buildTestApp(t, { WEBHOOK_ALLOW_PRIVATE_URLS: 'true' })
  const organization = await createOrganization(app)
  const receiver = await startReceiver(t)
  const webhook = await createWebhook(t, app, organization, { url: receiver.url })
  const stored = await storedSecrets(app, webhook.id)
  t.match(stored?.secret, /^enc:v1:test-a:/)
  t.notOk(JSON.stringify(stored).includes(webhook.secret.slice(6)), 'the row holds no trace of the secret')
  const shown = await app.inject({ method: 'GET', url: `/api/webhooks/${webhook.id}`, headers: organization.headers })
  t.equal(shown.json().secret, 'whsec_…', 'the masked form shows the format and none of the secret')
  t.ok(await verifiesWith(app, organization, receiver, webhook.id, [webhook.secret]), 'the receiver verifies the signature with the secret it was given')
})

t.test('a service started with keys encrypts secrets stored in plain text', async (t) => {
  const app = await buildTestApp(t, { WEBHOOK_ALLOW_PRIVATE_URLS: 'true' })
  const organization = await createOrganization(app)
  const receiver = await startReceiver(t)
  const plain = createWebhookSecret()
  const { rows } = await app.pg.query<{ id: string }>(
    'INSERT INTO webhooks (organization_id, url, secret) VALUES ($1, $2, $3) RETURNING id', [organization.id, receiver.url, plain])
  const id = rows[0]?.id ?? ''
  t.ok(await verifiesWith(app, organization, receiver, id, [plain]), 'a plain secret signs')
  await buildTestApp(t)
  await waitFor('the plain secret to be encrypted at start-up', async () => (await storedSecrets(app, id))?.secret.startsWith('enc:v1:') === true)
  t.ok(await verifiesWith(app, organization, receiver, id, [plain]), 'and signs the same once encrypted')
})

t.test('a new first key re-encrypts every secret, the previous ones included', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const oldBox = createSecretBox(KEY_A)
  const newBox = createSecretBox(`${KEY_B},${KEY_A}`)
  const [current, previous, plain] = [createWebhookSecret(), createWebhookSecret(), createWebhookSecret()]
  // In a transaction that is rolled back: the test's rows are invisible to the other test apps re-encrypting
  // the shared database at their start-up, and nothing of this stays.
  const rollBack = new Error('roll back')
  await t.rejects(inTransaction(app.pg.pool, async (client) => {
    const insert = (secret: string, previousSecret: string | null) => client.query<{ id: string }>(
      `INSERT INTO webhooks (organization_id, url, secret, previous_secret, previous_secret_until)
       VALUES ($1, 'http://127.0.0.1:9/', $2, $3, now() + interval '1 hour') RETURNING id`, [organization.id, secret, previousSecret])
    const sealed = (await insert(oldBox.seal(current), oldBox.seal(previous))).rows[0]?.id
    const unsealed = (await insert(plain, null)).rows[0]?.id
    const { resealed, unreadable } = await resealWebhookSecrets(client, newBox)
    t.ok(resealed >= 2, `${resealed} rows re-encrypted`)
    t.equal(unreadable, 0)
    const { rows } = await client.query<{ id: string, secret: string, previous_secret: string | null }>(
      'SELECT id, secret, previous_secret FROM webhooks WHERE id = ANY($1)', [[sealed, unsealed]])
    const byId = new Map(rows.map((row) => [row.id, row]))
    const [a, b] = [byId.get(sealed ?? ''), byId.get(unsealed ?? '')]
    t.match(a, { secret: /^enc:v1:test-b:/, previous_secret: /^enc:v1:test-b:/ })
    t.match(b, { secret: /^enc:v1:test-b:/, previous_secret: null })
    t.same([newBox.open(a?.secret ?? ''), newBox.open(a?.previous_secret ?? ''), newBox.open(b?.secret ?? '')], [current, previous, plain])
    throw rollBack
  }), rollBack)
})

t.test('the previous secret is removed once its overlap has ended', async (t) => {
  const app = await buildTestApp(t, { WEBHOOK_ALLOW_PRIVATE_URLS: 'true' })
  const organization = await createOrganization(app)
  const receiver = await startReceiver(t)
  const webhook = await createWebhook(t, app, organization, { url: receiver.url })
  const rotated = (await app.inject({ method: 'POST', url: `/api/webhooks/${webhook.id}/rotate-secret`, headers: organization.headers })).json()
  t.match(await storedSecrets(app, webhook.id), { previous_secret: /^enc:v1:/ }, 'during the overlap the old secret is kept, encrypted')
  t.ok(await verifiesWith(app, organization, receiver, webhook.id, [rotated.secret, webhook.secret]), 'both secrets sign')

  await app.pg.query('UPDATE webhooks SET previous_secret_until = now() - interval \'1 second\' WHERE id = $1', [webhook.id])
  // Every process sweeps at start-up and then every minute; a fresh one shows it without waiting a minute.
  await buildTestApp(t)
  await waitFor('the expired previous secret to be cleared', async () => (await storedSecrets(app, webhook.id))?.previous_secret === null)
  t.ok(await verifiesWith(app, organization, receiver, webhook.id, [rotated.secret]), 'the new secret signs')
  t.notOk(await verifiesWith(app, organization, receiver, webhook.id, [webhook.secret]), 'the old one no longer does')
})
