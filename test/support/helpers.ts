import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify'
import { randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { buildApp } from '../../app.js'
import { loadConfig, type Config } from '../../lib/config.js'

export interface Teardown {
  teardown: (fn: () => unknown) => void
}

const databaseUrl = process.env.DATABASE_URL
if (!databaseUrl) throw new Error('DATABASE_URL is not set: run the suite with `npm test`, which provides one')

/** The test apps' ADMIN_TOKEN (unless a test overrides it): createOrganization sends it, so every tier can be made. */
export const TEST_ADMIN_TOKEN = 'test-admin-token-0123456789abcdef'

/**
 * Webhook secret keys every test app knows, so that any app can read any other's rows (apps re-encrypt every
 * row of the shared database at start-up). The first encrypts unless a test puts the other first.
 */
export const TEST_SECRET_KEYS = [`test-a:${Buffer.alloc(32, 'a').toString('base64')}`, `test-b:${Buffer.alloc(32, 'b').toString('base64')}`]

/**
 * `url`'s database on the direct server when the suite runs through a pooler (DATABASE_DIRECT_URL), else `url`:
 * a test's own database needs its migrations, LISTEN and CREATE/DROP DATABASE there, not on the suite's database.
 */
export function directDatabaseUrl (url: string): string {
  const direct = process.env.DATABASE_DIRECT_URL
  if (direct === undefined || direct === '') return url
  const onDirect = new URL(direct)
  onDirect.pathname = new URL(url).pathname
  return onDirect.toString()
}

/** Settings for a test app: quiet logs, limits out of the way, its own Redis key space. */
export function testConfig (overrides: Record<string, string> = {}): Config {
  return loadConfig({
    ...process.env,
    LOG_LEVEL: 'silent',
    ADMIN_TOKEN: TEST_ADMIN_TOKEN,
    WEBHOOK_SECRET_KEYS: TEST_SECRET_KEYS.join(','),
    RATE_LIMIT_FREE: '0',
    RATE_LIMIT_ANONYMOUS: '0',
    // A busy test machine must not shed a test's requests; the shedding tests set their own bounds.
    OVERLOAD_MAX_EVENT_LOOP_DELAY_MS: '0',
    INGEST_QUEUE_MAX_WAIT_MS: '0',
    OVERLOAD_MAX_IN_FLIGHT: '0',
    REDIS_KEY_PREFIX: `test:${randomUUID()}:`,
    // Only the webhook delivery tests run workers, so no other test's app sends their deliveries.
    WEBHOOK_WORKER: 'off',
    ...overrides,
    // An app on a database of the test's own reaches that database directly too.
    ...(overrides.DATABASE_URL !== undefined && overrides.DATABASE_DIRECT_URL === undefined && process.env.DATABASE_DIRECT_URL
      ? { DATABASE_DIRECT_URL: directDatabaseUrl(overrides.DATABASE_URL) }
      : {})
  })
}

/**
 * Deletes, when the app closes, every organization created through it; their events, webhooks and deliveries
 * go with them, so repeated runs do not grow the suite's database.
 */
function removeOrganizationsOnClose (app: FastifyInstance): void {
  const created = new Set<string>()
  app.addHook('onSend', async (request, reply, payload) => {
    if (request.routeOptions.url === '/api/keys/generate' && reply.statusCode === 201 && typeof payload === 'string') {
      created.add((JSON.parse(payload) as { organization_id: string }).organization_id)
    }
    return payload
  })
  // Added after every plugin, so it runs before the pool closes.
  app.addHook('onClose', async () => {
    if (created.size > 0) await app.pg.query('DELETE FROM organizations WHERE id = ANY($1::uuid[])', [[...created]])
  })
}

/**
 * A full app on the suite's database (or overrides.DATABASE_URL), closed when the test ends; `extend` may add
 * test-only routes.
 */
export async function buildTestApp (t: Teardown, overrides: Record<string, string> = {}, extend?: (app: FastifyInstance) => void): Promise<FastifyInstance> {
  const config = testConfig(overrides)
  const app = await buildApp({ config, databaseUrl: config.DATABASE_URL ?? databaseUrl as string })
  t.teardown(() => app.close())
  removeOrganizationsOnClose(app)
  extend?.(app)
  await app.ready()
  return app
}

export interface TestOrganization {
  key: string
  id: string
  headers: Record<string, string>
}

export async function createOrganization (app: FastifyInstance, tier = 'free'): Promise<TestOrganization> {
  const adminToken = app.config.ADMIN_TOKEN
  const response = await app.inject({
    method: 'POST',
    url: '/api/keys/generate',
    headers: adminToken === undefined ? {} : { 'x-admin-token': adminToken },
    payload: { organization_name: `test-org-${randomUUID()}`, tier }
  })
  if (response.statusCode !== 201) throw new Error(`key generation failed: ${response.body}`)
  const body = response.json<{ api_key: string, organization_id: string }>()
  return { key: body.api_key, id: body.organization_id, headers: { 'x-api-key': body.api_key } }
}

export function sendEvent (app: FastifyInstance, organization: TestOrganization, body: object, options: Partial<InjectOptions> = {}): Promise<LightMyRequestResponse> {
  return app.inject({ method: 'POST', url: '/api/events', headers: { ...organization.headers, ...options.headers }, payload: body })
}

/**
 * Pool clients still checked out once background work has settled (announcements are sent up to 20 ms after a
 * commit, on a pool client). Waits up to `limitMs` for none: a leaked client never comes back, so a leak still shows.
 */
export async function checkedOutAfterSettling (app: FastifyInstance, limitMs = 5000): Promise<number> {
  const checkedOut = () => app.pg.pool.totalCount - app.pg.pool.idleCount
  const deadline = Date.now() + limitMs
  while (checkedOut() > 0 && Date.now() < deadline) await sleep(20)
  return checkedOut()
}

/**
 * The suite's database URL with every connection made through it named `applicationName` (the URL's
 * parameter wins over the app's own name), so a test can find, or cut, exactly its app's connections.
 */
export function taggedDatabaseUrl (applicationName: string, base = databaseUrl as string): string {
  const url = new URL(base)
  url.searchParams.set('application_name', applicationName)
  return url.toString()
}
