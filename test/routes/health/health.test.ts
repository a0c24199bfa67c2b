import t from 'tap'
import { buildTestApp } from '../../support/helpers.js'

t.test('GET /health answers ok without the database', async (t) => {
  const app = await buildTestApp(t)
  const response = await app.inject({ method: 'GET', url: '/health' })
  t.equal(response.statusCode, 200)
  t.same(response.json(), { status: 'ok' })
  t.match(response.headers['x-request-id'], /^[0-9a-f-]{36}$/)
})

t.test('GET /health/ready reports the database and pool totals', async (t) => {
  const app = await buildTestApp(t)
  const response = await app.inject({ method: 'GET', url: '/health/ready' })
  t.equal(response.statusCode, 200)
  const body = response.json()
  t.equal(body.status, 'ok')
  t.equal(body.database, 'ok')
  t.match(body.pool, { total: Number, idle: Number, waiting: 0 })
})
