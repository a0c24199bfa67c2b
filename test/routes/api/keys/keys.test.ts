import t from 'tap'
import { buildTestApp, createOrganization, TEST_ADMIN_TOKEN } from '../../../support/helpers.js'

const admin = { 'x-admin-token': TEST_ADMIN_TOKEN }

t.test('POST /api/keys/generate creates an organization and shows the key once', async (t) => {
  const app = await buildTestApp(t)
  const response = await app.inject({ method: 'POST', url: '/api/keys/generate', headers: admin, payload: { organization_name: 'Acme Ünïcode 🚀' } })
  t.equal(response.statusCode, 201)
  const body = response.json()
  t.match(body, {
    api_key: /^sk_[A-Za-z0-9_-]{32,}$/,
    organization_id: /^[0-9a-f-]{36}$/,
    organization_name: 'Acme Ünïcode 🚀',
    tier: 'free',
    created_at: String
  })
  t.ok(body.api_key.startsWith(body.key_prefix), 'key_prefix is the start of the key')
  t.notOk(Number.isNaN(Date.parse(body.created_at)))

  const stored = await app.pg.query('SELECT * FROM organizations WHERE id = $1', [body.organization_id])
  t.notOk(JSON.stringify(stored.rows[0]).includes(body.api_key), 'the key itself is not stored')
})

t.test('generate validates its body', async (t) => {
  const app = await buildTestApp(t)
  const cases = [
    {},
    { organization_name: '' },
    { organization_name: 'x'.repeat(256) },
    { organization_name: 'ok', tier: 'platinum' },
    { organization_name: 'ok', unexpected: true },
    { organization_name: 42 }
  ]
  for (const payload of cases) {
    const response = await app.inject({ method: 'POST', url: '/api/keys/generate', headers: admin, payload })
    t.equal(response.statusCode, 400, JSON.stringify(payload))
    t.match(response.json(), { statusCode: 400, error: 'Bad Request', code: 'validation_failed', message: String })
  }
})

t.test('every tier can be chosen and GET /api/keys reports its limit without the key', async (t) => {
  const app = await buildTestApp(t, { RATE_LIMIT_STARTER: '1000', RATE_LIMIT_ENTERPRISE: '0' })
  const starter = await createOrganization(app, 'starter')
  const info = await app.inject({ method: 'GET', url: '/api/keys', headers: starter.headers })
  t.equal(info.statusCode, 200)
  t.match(info.json(), { organization_id: starter.id, tier: 'starter', rate_limit_per_minute: 1000, key_prefix: String })
  t.notOk(info.body.includes(starter.key))

  const enterprise = await createOrganization(app, 'enterprise')
  const unlimited = await app.inject({ method: 'GET', url: '/api/keys', headers: { authorization: `Bearer ${enterprise.key}` } })
  t.equal(unlimited.statusCode, 200, 'Bearer works as well as X-API-Key')
  t.equal(unlimited.json().rate_limit_per_minute, null, '0 in the settings means unlimited')
})

t.test('missing and wrong keys answer 401 with distinct codes', async (t) => {
  const app = await buildTestApp(t)
  const missing = await app.inject({ method: 'GET', url: '/api/keys' })
  t.equal(missing.statusCode, 401)
  t.match(missing.json(), { statusCode: 401, error: 'Unauthorized', code: 'missing_api_key' })

  for (const headers of [{ 'x-api-key': 'sk_wrong' }, { authorization: 'Bearer sk_wrong' }, { authorization: 'Basic abc' }]) {
    const wrong = await app.inject({ method: 'GET', url: '/api/inbox', headers })
    t.equal(wrong.statusCode, 401)
    t.ok(['invalid_api_key', 'missing_api_key'].includes(wrong.json().code))
  }
  const wrong = await app.inject({ method: 'GET', url: '/api/inbox', headers: { 'x-api-key': 'sk_wrong' } })
  t.equal(wrong.json().code, 'invalid_api_key')
})

t.test('rotation returns a new key and the old one stops working', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  // A JSON content type with no body (common in HTTP clients) is accepted on body-less routes.
  const rotated = await app.inject({ method: 'POST', url: '/api/keys/rotate', headers: { ...organization.headers, 'content-type': 'application/json' } })
  t.equal(rotated.statusCode, 200)
  const { api_key: newKey, key_prefix: prefix } = rotated.json()
  t.not(newKey, organization.key)
  t.ok(newKey.startsWith(prefix))

  const old = await app.inject({ method: 'GET', url: '/api/keys', headers: organization.headers })
  t.equal(old.statusCode, 401)
  t.equal(old.json().code, 'invalid_api_key')
  const fresh = await app.inject({ method: 'GET', url: '/api/keys', headers: { 'x-api-key': newKey } })
  t.equal(fresh.statusCode, 200)
  t.equal(fresh.json().organization_id, organization.id)
  t.equal(fresh.json().key_prefix, prefix)
})

t.test('ADMIN_TOKEN guards key generation when set', async (t) => {
  const adminToken = 'admin-token-for-tests-0123456789'
  const app = await buildTestApp(t, { ADMIN_TOKEN: adminToken })
  const payload = { organization_name: 'guarded' }
  const without = await app.inject({ method: 'POST', url: '/api/keys/generate', payload })
  t.equal(without.statusCode, 401)
  t.equal(without.json().code, 'invalid_admin_token')
  const wrong = await app.inject({ method: 'POST', url: '/api/keys/generate', payload, headers: { 'x-admin-token': 'nope' } })
  t.equal(wrong.statusCode, 401)
  const right = await app.inject({ method: 'POST', url: '/api/keys/generate', payload, headers: { 'x-admin-token': adminToken } })
  t.equal(right.statusCode, 201)
})
