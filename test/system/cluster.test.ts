import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { request } from 'node:http'
import { createInterface } from 'node:readline'
import { randomUUID } from 'node:crypto'
import { isAlive } from '../../db/embedded-postgres.js'
import { withClient } from '../support/database.js'
import { freePort } from '../support/free-port.js'
import { TEST_ADMIN_TOKEN, type Teardown } from '../support/helpers.js'
import { waitFor } from '../support/webhooks.js'

// WEB_CONCURRENCY runs the production build (dist/server.js, built by `npm test`) as a primary and its children.

const databaseUrl = process.env.DATABASE_URL
if (!databaseUrl) throw new Error('DATABASE_URL is not set: run the suite with `npm test`, which provides one')
// Three processes start on a machine that may be busy with other test files.
const START_TIMEOUT_MS = 120_000
const REQUEST_TIMEOUT_MS = 15_000

interface LogLine {
  msg?: string
  pid?: number
  slot?: number
  child_pid?: number
  req?: { url?: string }
}

interface Cluster {
  primary: ChildProcess
  url: string
  lines: LogLine[]
  exited: Promise<number | null>
  /** The pid of the child in `slot` that last reported listening. */
  childPid: (slot: number) => number | undefined
}

/** Starts `node dist/server.js` with WEB_CONCURRENCY=2 and waits until the primary says all children listen. */
async function startCluster (t: Teardown, env: Record<string, string> = {}): Promise<Cluster> {
  const port = await freePort()
  const primary = spawn(process.execPath, ['dist/server.js'], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: {
      ...process.env,
      HOST: '127.0.0.1',
      PORT: String(port),
      LOG_LEVEL: 'info',
      WEB_CONCURRENCY: '2',
      WEBHOOK_WORKER: 'off',
      ADMIN_TOKEN: TEST_ADMIN_TOKEN,
      RATE_LIMIT_FREE: '0',
      RATE_LIMIT_ANONYMOUS: '0',
      REDIS_KEY_PREFIX: `test:${randomUUID()}:`,
      ...env
    }
  })
  const lines: LogLine[] = []
  const children = new Map<number, number>()
  const exited = once(primary, 'exit').then(([code]) => code as number | null)
  t.teardown(async () => {
    if (primary.exitCode !== null || primary.signalCode !== null) return
    primary.kill('SIGTERM')
    await exited
  })
  const ready = new Promise<void>((resolve, reject) => {
    createInterface({ input: primary.stdout as NodeJS.ReadableStream }).on('line', (text) => {
      const line = parse(text)
      if (line === undefined) return
      lines.push(line)
      if (line.msg === 'API process listening' && line.slot !== undefined && line.child_pid !== undefined) children.set(line.slot, line.child_pid)
      if (line.msg === 'all API processes listening') resolve()
    })
    void exited.then((code) => reject(new Error(`the primary exited with ${String(code)} before its children listened`)))
  })
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`the cluster did not start within ${START_TIMEOUT_MS / 1000} s:\n${lines.map((line) => line.msg).join('\n')}`)), START_TIMEOUT_MS)
  })
  await Promise.race([ready, late]).finally(() => clearTimeout(timer))
  return { primary, url: `http://127.0.0.1:${port}`, lines, exited, childPid: (slot) => children.get(slot) }
}

function parse (text: string): LogLine | undefined {
  try {
    return JSON.parse(text) as LogLine
  } catch {
    return undefined
  }
}

interface Answer {
  status: number
  body: Record<string, unknown>
}

/**
 * One request on a connection of its own, so the cluster's round robin spreads requests over the children and a
 * killed child takes only the requests it was answering with it.
 */
async function call (url: string, method: string, headers: Record<string, string>, body?: object): Promise<Answer> {
  const payload = body === undefined ? undefined : JSON.stringify(body)
  return await new Promise<Answer>((resolve, reject) => {
    const outgoing = request(url, {
      method,
      agent: false,
      headers: { ...headers, ...(payload === undefined ? {} : { 'content-type': 'application/json' }) }
    }, (response) => {
      const chunks: Buffer[] = []
      response.on('data', (chunk: Buffer) => chunks.push(chunk))
      response.on('end', () => {
        const text = Buffer.concat(chunks).toString()
        resolve({ status: response.statusCode ?? 0, body: text === '' ? {} : JSON.parse(text) as Record<string, unknown> })
      })
      response.on('error', reject)
    })
    outgoing.on('error', reject)
    // A connection the primary handed to a child just as it died is never answered nor closed (node:cluster's
    // round robin keeps its copy open): to a client it is a request in flight on that child, ended by its timeout.
    outgoing.setTimeout(REQUEST_TIMEOUT_MS, () => outgoing.destroy(Object.assign(new Error('no answer'), { code: 'ETIMEDOUT' })))
    outgoing.end(payload)
  })
}

async function createKey (cluster: Cluster, tier: string): Promise<{ id: string, key: string }> {
  const created = await call(`${cluster.url}/api/keys/generate`, 'POST', { 'x-admin-token': TEST_ADMIN_TOKEN }, { organization_name: `cluster-test-${randomUUID()}`, tier })
  if (created.status !== 201) throw new Error(`key generation answered ${created.status}`)
  return { id: String(created.body.organization_id), key: String(created.body.api_key) }
}

const deleteOrganizations = (ids: string[]) => withClient(databaseUrl, (client) => client.query('DELETE FROM organizations WHERE id = ANY($1::uuid[])', [ids]))

t.test('WEB_CONCURRENCY=2: a child killed with SIGKILL is replaced, and only the requests it was answering fail', async (t) => {
  const cluster = await startCluster(t)
  const organization = await createKey(cluster, 'free')
  t.teardown(() => deleteOrganizations([organization.id]))
  const victim = cluster.childPid(1)
  if (victim === undefined) throw new Error('no child in slot 1')

  const senders = 8
  const acknowledged: string[] = []
  const failures: string[] = []
  const statuses: number[] = []
  let okAfterReplacement = 0
  let replaced = false
  let stop = false
  const sender = async () => {
    while (!stop) {
      try {
        const answer = await call(`${cluster.url}/api/events`, 'POST', { 'x-api-key': organization.key }, { type: 'cluster.load', payload: { n: acknowledged.length } })
        statuses.push(answer.status)
        if (answer.status === 201) {
          acknowledged.push(String(answer.body.event_id))
          if (replaced) okAfterReplacement++
        }
      } catch (error) {
        failures.push((error as NodeJS.ErrnoException).code ?? String(error))
      }
    }
  }
  const load = Array.from({ length: senders }, sender)
  await waitFor('requests to be answered before the kill', () => acknowledged.length >= 100, START_TIMEOUT_MS)
  process.kill(victim, 'SIGKILL')
  await waitFor('a new child in slot 1', () => cluster.childPid(1) !== victim, START_TIMEOUT_MS)
  replaced = true
  await waitFor('requests to be answered after the replacement', () => okAfterReplacement >= 100, START_TIMEOUT_MS)
  stop = true
  await Promise.all(load)

  t.ok(cluster.lines.some((line) => line.msg === 'API process exited; replacing it' && line.child_pid === victim), 'the primary saw the child die')
  t.same(statuses.filter((status) => status !== 201), [], 'every answer is 201: no 5xx, nothing refused')
  t.ok(failures.length <= senders, `at most one failed request per sender, the ones in flight on the killed child (${failures.length}: ${failures.join(', ')})`)
  const stored = await withClient(databaseUrl, async (client) => (await client.query<{ n: number }>(
    'SELECT count(*)::int AS n FROM events WHERE id = ANY($1::uuid[])', [acknowledged])).rows[0]?.n)
  t.equal(stored, acknowledged.length, `every acknowledged event is stored (${acknowledged.length})`)

  const children = [cluster.childPid(0), cluster.childPid(1)]
  cluster.primary.kill('SIGTERM')
  t.equal(await cluster.exited, 0, 'SIGTERM: the primary exits 0')
  t.ok(children.every((pid) => pid !== undefined && !isAlive(pid)), 'its children have exited before it')
  t.ok(cluster.lines.filter((line) => line.msg === 'shutting down').length >= 3, 'the primary and both children shut down gracefully')
})

t.test('two processes share rate limits through Redis, and a rotated key stops working in both', { skip: process.env.REDIS_URL ? false : 'needs REDIS_URL' }, async (t) => {
  const limit = 10
  const cluster = await startCluster(t, { RATE_LIMIT_FREE: String(limit), RATE_LIMIT_STARTER: '0' })
  const limited = await createKey(cluster, 'free')
  const cached = await createKey(cluster, 'starter')
  t.teardown(() => deleteOrganizations([limited.id, cached.id]))

  const statuses: number[] = []
  for (let i = 0; i < 2 * limit; i++) statuses.push((await call(`${cluster.url}/api/keys`, 'GET', { 'x-api-key': limited.key })).status)
  t.equal(statuses.filter((status) => status === 200).length, limit, 'one budget for the organization, not one per process')
  t.equal(statuses.filter((status) => status === 429).length, limit, 'the rest are refused')
  const servedBy = new Set(cluster.lines.filter((line) => line.req?.url === '/api/keys' && line.pid !== undefined).map((line) => line.pid))
  t.equal(servedBy.size, 2, 'both processes answered')

  // Both processes cache the key, then one of them rotates it.
  for (let i = 0; i < 4; i++) t.equal((await call(`${cluster.url}/api/keys`, 'GET', { 'x-api-key': cached.key })).status, 200)
  t.equal((await call(`${cluster.url}/api/keys/rotate`, 'POST', { 'x-api-key': cached.key })).status, 200)
  const oldKeyRefusedEverywhere = async () => {
    const answers = await Promise.all(Array.from({ length: 6 }, () => call(`${cluster.url}/api/keys`, 'GET', { 'x-api-key': cached.key })))
    return answers.every((answer) => answer.status === 401)
  }
  // The cache TTL is 60 s: well before it, only the notification can have dropped the key in the other process.
  await waitFor('the old key to be refused by both processes', oldKeyRefusedEverywhere, 20_000)
  t.pass('the rotated key is refused by both processes')
})
