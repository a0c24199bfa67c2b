import t from 'tap'
import { inTransaction } from '../../../db/transaction.js'
import { buildTestApp, checkedOutAfterSettling, createOrganization } from '../../support/helpers.js'
import { waitFor } from '../../support/webhooks.js'

const keyInfo = (app: Awaited<ReturnType<typeof buildTestApp>>, key: string) =>
  app.inject({ method: 'GET', url: '/api/keys', headers: { 'x-api-key': key } })

t.test('a key cached by one instance stops working there when another instance rotates it', async (t) => {
  const rotating = await buildTestApp(t)
  const caching = await buildTestApp(t)
  const organization = await createOrganization(rotating)
  t.equal((await keyInfo(caching, organization.key)).statusCode, 200, 'the second instance now holds the key in its cache')

  const rotated = await rotating.inject({ method: 'POST', url: '/api/keys/rotate', headers: organization.headers })
  t.equal(rotated.statusCode, 200)
  t.equal((await keyInfo(rotating, organization.key)).statusCode, 401, 'the rotating instance refuses the old key at once')
  await waitFor('the other instance to drop the rotated key', async () => (await keyInfo(caching, organization.key)).statusCode === 401)
  t.equal((await keyInfo(caching, organization.key)).json().code, 'invalid_api_key')
  t.equal((await keyInfo(caching, rotated.json().api_key)).statusCode, 200, 'the new key works everywhere')
})

t.test('tier changes and deletions made in SQL reach cached keys', async (t) => {
  const app = await buildTestApp(t, { RATE_LIMIT_STARTER: '1000', RATE_LIMIT_ENTERPRISE: '10000' })
  const organization = await createOrganization(app, 'starter')
  t.equal((await keyInfo(app, organization.key)).json().rate_limit_per_minute, 1000)

  await app.pg.query('UPDATE organizations SET tier = \'enterprise\' WHERE id = $1', [organization.id])
  await waitFor('the new tier to show', async () => (await keyInfo(app, organization.key)).json().tier === 'enterprise')
  t.equal((await keyInfo(app, organization.key)).json().rate_limit_per_minute, 10000)

  await app.pg.query('DELETE FROM organizations WHERE id = $1', [organization.id])
  await waitFor('the deleted organization\'s key to fail', async () => (await keyInfo(app, organization.key)).statusCode === 401)
})

/** Replaces the key in SQL with triggers off for this transaction only, so no instance is notified. */
async function replaceKeySilently (app: Awaited<ReturnType<typeof buildTestApp>>, organizationId: string) {
  await inTransaction(app.pg.pool, async (client) => {
    await client.query('SET LOCAL session_replication_role = replica')
    await client.query('UPDATE organizations SET key_hash = sha256(gen_random_uuid()::text::bytea) WHERE id = $1', [organizationId])
  })
}

t.test('a cached key is answered from memory; the TTL bounds a change nobody announced', async (t) => {
  const app = await buildTestApp(t, { API_KEY_CACHE_TTL_SECONDS: '3' })
  const organization = await createOrganization(app)
  t.equal((await keyInfo(app, organization.key)).statusCode, 200)
  await replaceKeySilently(app, organization.id)
  t.equal((await keyInfo(app, organization.key)).statusCode, 200, 'the cached organization answered without the database')
  await waitFor('the cached key to expire', async () => (await keyInfo(app, organization.key)).statusCode === 401)
})

t.test('with the cache off (TTL 0) every request reads the key from the database', async (t) => {
  const app = await buildTestApp(t, { API_KEY_CACHE_TTL_SECONDS: '0' })
  const organization = await createOrganization(app)
  t.equal((await keyInfo(app, organization.key)).statusCode, 200)
  await replaceKeySilently(app, organization.id)
  t.equal((await keyInfo(app, organization.key)).statusCode, 401, 'no cached copy answered')
})

t.test('cached lookups survive many requests, with unknown keys among them', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const statuses = await Promise.all(Array.from({ length: 200 }, (_, i) =>
    keyInfo(app, i % 4 === 0 ? `sk_unknown_${i}` : organization.key).then((response) => response.statusCode)))
  t.same(statuses.filter((status) => status === 200).length, 150)
  t.same(statuses.filter((status) => status === 401).length, 50)
  t.equal(await checkedOutAfterSettling(app), 0, 'no pool client checked out')
})
