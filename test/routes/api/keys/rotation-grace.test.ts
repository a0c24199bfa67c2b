import type { FastifyInstance } from 'fastify'
import { setImmediate as nextTurn } from 'node:timers/promises'
import t from 'tap'
import { buildTestApp, createOrganization } from '../../../support/helpers.js'
import { waitFor } from '../../../support/webhooks.js'

const ADDRESS = '198.51.100.40'

const keyInfo = (app: FastifyInstance, key: string, remoteAddress = ADDRESS) =>
  app.inject({ method: 'GET', url: '/api/keys', headers: { 'x-api-key': key }, remoteAddress }).then((response) => response.statusCode)

const rotate = (app: FastifyInstance, key: string, payload?: object) =>
  app.inject({ method: 'POST', url: '/api/keys/rotate', headers: { 'x-api-key': key }, remoteAddress: ADDRESS, ...(payload === undefined ? {} : { payload }) })

/** Resolves once the app's listener has handled the organization's change notification. */
function changeHeard (app: FastifyInstance, organizationId: string): Promise<void> {
  return new Promise((resolve) => {
    app.wakeUps.listen('triggers_organizations', (payload) => { if (payload === organizationId) resolve() })
  })
}

const tally = (statuses: number[]) => statuses.reduce<Record<number, number>>((counts, status) => ({ ...counts, [status]: (counts[status] ?? 0) + 1 }), {})

t.test('after a rotation, 8 workers on the old key from one address spend its budget, and the new key answers 200 throughout', async (t) => {
  const BUDGET = 20
  const WORKERS = 8
  const REQUESTS_PER_WORKER = 15
  const rotating = await buildTestApp(t, { RATE_LIMIT_ANONYMOUS: String(BUDGET) })
  const serving = await buildTestApp(t, { RATE_LIMIT_ANONYMOUS: String(BUDGET) })
  const organization = await createOrganization(rotating)
  const heard = changeHeard(serving, organization.id)
  const rotated = await rotate(rotating, organization.key)
  t.equal(rotated.statusCode, 200)
  const newKey = rotated.json<{ api_key: string }>().api_key
  await heard

  for (const [name, app] of [['rotating', rotating], ['serving', serving]] as const) {
    const oldKeyStatuses: number[] = []
    const newKeyStatuses: number[] = []
    let workersDone = false
    const worker = async () => {
      for (let sent = 0; sent < REQUESTS_PER_WORKER; sent++) oldKeyStatuses.push(await keyInfo(app, organization.key))
    }
    // The new key is sent alongside the old workers, from the same address, until they are done, and once after.
    const newKeyClient = async () => {
      while (!workersDone) {
        newKeyStatuses.push(await keyInfo(app, newKey))
        // A cached answer involves no I/O: without a turn of the event loop, this client would starve the workers.
        await nextTurn()
      }
      newKeyStatuses.push(await keyInfo(app, newKey))
    }
    const client = newKeyClient()
    await Promise.all(Array.from({ length: WORKERS }, worker))
    workersDone = true
    await client
    const old = tally(oldKeyStatuses)
    t.same(Object.keys(old).sort(), ['401', '429'], `${name}: the old key was refused, then the address was over its budget`)
    t.equal(old[401], BUDGET, `${name}: the whole budget was spent on the old key`)
    t.same(tally(newKeyStatuses), { 200: newKeyStatuses.length }, `${name}: every request with the new key answered 200 (${newKeyStatuses.length})`)
  }
})

t.test('the old key keeps working for expires_in_seconds, then stops, on every instance', async (t) => {
  const rotating = await buildTestApp(t)
  const serving = await buildTestApp(t)
  const organization = await createOrganization(rotating)
  t.equal(await keyInfo(serving, organization.key), 200, 'the serving instance caches the old key')
  const heard = changeHeard(serving, organization.id)
  // An hour of grace, so nothing checked during it can outlast it on a slow machine; the test ends it on purpose.
  const asked = Date.now()
  const rotated = await rotate(rotating, organization.key, { expires_in_seconds: 3600 })
  const answered = Date.now()
  t.equal(rotated.statusCode, 200)
  const { api_key: newKey, previous_key_expires_at: expiresAt } = rotated.json<{ api_key: string, previous_key_expires_at: string | null }>()
  // An hour from the rotation, somewhere between asking and the answer (a second for the clocks).
  const expiry = Date.parse(expiresAt ?? '')
  t.ok(expiry >= asked + 3_599_000 && expiry <= answered + 3_601_000, 'the answer says when the old key stops')
  await heard
  for (const app of [rotating, serving]) {
    t.equal(await keyInfo(app, organization.key), 200, 'the old key works during its grace period')
    t.equal(await keyInfo(app, organization.key), 200, 'also from memory')
    t.equal(await keyInfo(app, newKey), 200, 'and so does the new key')
  }

  // The grace period ends now (as if its hour had passed); the update notifies every instance, like any change.
  const ended = [changeHeard(rotating, organization.id), changeHeard(serving, organization.id)]
  await rotating.pg.query('UPDATE organizations SET previous_key_expires_at = now() WHERE id = $1', [organization.id])
  await Promise.all(ended)
  for (const app of [rotating, serving]) {
    t.equal(await keyInfo(app, organization.key), 401, 'the old key stops once its grace period is over (memory keeps it no longer)')
    t.equal(await keyInfo(app, newKey), 200, 'the new key still works')
  }
})

t.test('memory keeps an old key no longer than its grace period, which ends with no notification', async (t) => {
  const rotating = await buildTestApp(t)
  const serving = await buildTestApp(t)
  const organization = await createOrganization(rotating)
  const heard = changeHeard(serving, organization.id)
  t.equal((await rotate(rotating, organization.key, { expires_in_seconds: 1 })).statusCode, 200)
  await heard
  // The database's word on the grace period, taken before each request: a 200 is wrong only once it has said over.
  const inGrace = async () => (await rotating.pg.query<{ in_grace: boolean }>(
    'SELECT previous_key_expires_at > now() AS in_grace FROM organizations WHERE id = $1', [organization.id])).rows[0]?.in_grace === true
  await Promise.all(([['rotating', rotating], ['serving', serving]] as const).map(async ([name, app]) => {
    let inGraceAnswers = 0
    let lateAnswers = 0
    await waitFor(`${name}: the old key to stop`, async () => {
      const before = await inGrace()
      const status = await keyInfo(app, organization.key)
      if (status === 200) {
        if (before) inGraceAnswers++
        else lateAnswers++
      }
      return status === 401
    }, 15_000)
    t.equal(lateAnswers, 0, `${name}: no 200 to a request sent once the grace period was over (memory kept the key no longer)`)
    t.equal(await inGrace(), false, `${name}: it stopped only once its grace period was over`)
    t.comment(`${name}: ${inGraceAnswers} answers 200 during the grace period`)
  }))
})

t.test('rotating again ends the earlier grace period; an old key cannot rotate', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  const first = await rotate(app, organization.key, { expires_in_seconds: 3600 })
  t.equal(first.statusCode, 200)
  const second = first.json<{ api_key: string }>().api_key
  t.equal(await keyInfo(app, organization.key), 200, 'the first key is in its grace period')

  const byOldKey = await rotate(app, organization.key)
  t.equal(byOldKey.statusCode, 409, 'a key in its grace period cannot rotate')
  t.equal(byOldKey.json().code, 'key_already_rotated')

  const again = await rotate(app, second)
  t.equal(again.statusCode, 200)
  t.equal(again.json().previous_key_expires_at, null, 'no grace by default')
  t.equal(await keyInfo(app, organization.key), 401, 'the first key\'s grace ended with the second rotation')
  t.equal(await keyInfo(app, second), 401, 'the second key stopped at once')
  t.equal(await keyInfo(app, again.json<{ api_key: string }>().api_key), 200)
})

t.test('expires_in_seconds is validated', async (t) => {
  const app = await buildTestApp(t)
  const organization = await createOrganization(app)
  for (const payload of [{ expires_in_seconds: -1 }, { expires_in_seconds: 7 * 24 * 3600 + 1 }, { expires_in_seconds: 1.5 }, { expires_in_seconds: 'soon' }, { other: 1 }]) {
    const response = await rotate(app, organization.key, payload)
    t.equal(response.statusCode, 400, JSON.stringify(payload))
    t.equal(response.json().code, 'validation_failed')
  }
  t.equal(await keyInfo(app, organization.key), 200, 'a refused rotation changed nothing')
  const week = await rotate(app, organization.key, { expires_in_seconds: 7 * 24 * 3600 })
  t.equal(week.statusCode, 200, 'seven days is allowed')
})
