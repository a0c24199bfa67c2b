import t from 'tap'
import { buildTestApp } from '../../support/helpers.js'

const STATS_TOKEN = 'stats-token-for-tests-0123456789'

t.test('with STATS_TOKEN set, /stats/* need it, and guessing it is rate limited', async (t) => {
  const app = await buildTestApp(t, { STATS_TOKEN, RATE_LIMIT_ANONYMOUS: '5' })
  for (const url of ['/stats/cache', '/stats/ingest']) {
    const missing = await app.inject({ method: 'GET', url, remoteAddress: '192.0.2.10' })
    t.equal(missing.statusCode, 401, url)
    t.match(missing.json(), { code: 'invalid_stats_token' })
    const right = await app.inject({ method: 'GET', url, remoteAddress: '192.0.2.10', headers: { authorization: `Bearer ${STATS_TOKEN}` } })
    t.equal(right.statusCode, 200, url)
  }
  const guesses = []
  for (let i = 0; i < 3; i++) {
    guesses.push((await app.inject({ method: 'GET', url: '/stats/cache', remoteAddress: '192.0.2.10', headers: { authorization: `Bearer guess-${i}` } })).statusCode)
  }
  t.same(guesses, [401, 429, 429], 'the guesses share the address budget with the calls above')
})

t.test('without STATS_TOKEN the statistics stay open', async (t) => {
  const app = await buildTestApp(t)
  t.equal((await app.inject({ method: 'GET', url: '/stats/cache' })).statusCode, 200)
})
