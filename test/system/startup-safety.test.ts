import { spawn } from 'node:child_process'
import { once } from 'node:events'
import t from 'tap'
import { loadConfig } from '../../lib/config.js'
import { buildTestApp } from '../support/helpers.js'

const TOKEN = 'a-real-admin-token-0123456789'

t.test('a server reachable from other machines refuses to start without ADMIN_TOKEN', async (t) => {
  for (const host of ['0.0.0.0', '::', '10.1.2.3', 'api.internal']) {
    t.throws(() => loadConfig({ HOST: host }), { message: /ADMIN_TOKEN/ }, `HOST=${host}`)
  }
  for (const host of ['127.0.0.1', '127.0.0.2', '::1', '[::1]', 'localhost']) {
    t.doesNotThrow(() => loadConfig({ HOST: host }), `HOST=${host} is loopback`)
  }
  t.doesNotThrow(() => loadConfig({ HOST: '0.0.0.0', ADMIN_TOKEN: TOKEN }), 'with the token')
  t.doesNotThrow(() => loadConfig({ HOST: '0.0.0.0', ALLOW_OPEN_KEY_CREATION: 'true' }), 'or when open key creation is asked for')
  t.doesNotThrow(() => loadConfig({ HOST: '0.0.0.0' }, { listens: false }), 'processes that serve no HTTP (worker, migrations) are not concerned')
})

t.test('the production entry point exits on 0.0.0.0 without the token, naming ADMIN_TOKEN', async (t) => {
  const { ADMIN_TOKEN: _token, ALLOW_OPEN_KEY_CREATION: _open, ...inherited } = process.env
  // It stops while reading its settings, before any database is opened.
  const child = spawn(process.execPath, ['dist/server.js'], { env: { ...inherited, HOST: '0.0.0.0', PORT: '0' }, stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString() })
  child.stderr.on('data', (chunk: Buffer) => { output += chunk.toString() })
  const [code] = await once(child, 'exit') as [number | null]
  t.equal(code, 1)
  t.match(output, /Refusing to start: HOST=0\.0\.0\.0.*ADMIN_TOKEN/)
})

t.test('without ADMIN_TOKEN nobody can choose a tier above free', async (t) => {
  // On loopback (or with ALLOW_OPEN_KEY_CREATION) the server starts without the token: key creation is open.
  const app = await buildTestApp(t, { ADMIN_TOKEN: '', ALLOW_OPEN_KEY_CREATION: 'true' })
  for (const tier of ['starter', 'professional', 'enterprise']) {
    const refused = await app.inject({ method: 'POST', url: '/api/keys/generate', payload: { organization_name: 'greedy', tier } })
    t.equal(refused.statusCode, 403, tier)
    t.match(refused.json(), { code: 'tier_requires_admin_token', message: /ADMIN_TOKEN/ })
  }
  const sentToken = await app.inject({ method: 'POST', url: '/api/keys/generate', headers: { 'x-admin-token': TOKEN }, payload: { organization_name: 'guess', tier: 'enterprise' } })
  t.equal(sentToken.statusCode, 403, 'a token the server does not have proves nothing')
  const free = await app.inject({ method: 'POST', url: '/api/keys/generate', payload: { organization_name: 'modest' } })
  t.equal(free.statusCode, 201)
  t.equal(free.json().tier, 'free')
  const count = await app.pg.query('SELECT count(*)::int AS n FROM organizations WHERE name = ANY($1)', [['greedy', 'guess']])
  t.equal(count.rows[0].n, 0, 'no refused organization was created')
})
