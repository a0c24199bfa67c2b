import t from 'tap'
import { buildTestApp, createOrganization } from '../../support/helpers.js'

t.test('each organization has its tier\'s budget per minute', async (t) => {
  const app = await buildTestApp(t, { RATE_LIMIT_FREE: '3', RATE_LIMIT_STARTER: '0' })
  const limited = await createOrganization(app, 'free')
  const neighbour = await createOrganization(app, 'free')
  const unlimited = await createOrganization(app, 'starter')

  for (let i = 0; i < 3; i++) {
    const ok = await app.inject({ method: 'GET', url: '/api/keys', headers: limited.headers })
    t.equal(ok.statusCode, 200)
    t.equal(ok.headers['x-ratelimit-limit'], '3')
    t.equal(ok.headers['x-ratelimit-remaining'], String(2 - i))
  }
  // The budget is per organization, shared by all its routes.
  const refused = await app.inject({ method: 'GET', url: '/api/inbox', headers: limited.headers })
  t.equal(refused.statusCode, 429)
  t.match(refused.json(), { statusCode: 429, error: 'Too Many Requests', code: 'rate_limited', message: String })
  t.match(refused.headers['retry-after'], /^\d+$/)
  t.equal(refused.headers['x-ratelimit-remaining'], '0')

  t.equal((await app.inject({ method: 'GET', url: '/api/keys', headers: neighbour.headers })).statusCode, 200, 'other organizations are unaffected')
  for (let i = 0; i < 10; i++) {
    t.equal((await app.inject({ method: 'GET', url: '/api/keys', headers: unlimited.headers })).statusCode, 200)
  }
  t.equal((await app.inject({ method: 'GET', url: '/health' })).statusCode, 200, 'health is never limited')
})

t.test('requests without a valid key are limited per IP; liveness never is, readiness is', async (t) => {
  const app = await buildTestApp(t, { RATE_LIMIT_ANONYMOUS: '2' })
  const statuses: number[] = []
  for (let i = 0; i < 3; i++) {
    statuses.push((await app.inject({ method: 'GET', url: '/api/inbox', headers: { 'x-api-key': 'sk_guess' } })).statusCode)
  }
  t.same(statuses, [401, 401, 429], 'key guessing is rate limited')
  const generate = await app.inject({ method: 'POST', url: '/api/keys/generate', payload: { organization_name: 'late' } })
  t.equal(generate.statusCode, 429)
  const fromElsewhere = await app.inject({ method: 'GET', url: '/api/inbox', remoteAddress: '10.0.0.7' })
  t.equal(fromElsewhere.statusCode, 401, 'another IP has its own budget')
  for (let i = 0; i < 5; i++) t.equal((await app.inject({ method: 'GET', url: '/health' })).statusCode, 200)
  // Readiness queries the database, so it is counted like any keyless request.
  t.equal((await app.inject({ method: 'GET', url: '/health/ready' })).statusCode, 429)
  t.equal((await app.inject({ method: 'GET', url: '/health/ready', remoteAddress: '10.0.0.8' })).statusCode, 200)
})
