import type { FastifyInstance } from 'fastify'
import { setImmediate as nextTurn } from 'node:timers/promises'
import t from 'tap'
import { buildTestApp, createOrganization } from '../../../support/helpers.js'

const keyInfo = (app: FastifyInstance, key: string) =>
  app.inject({ method: 'GET', url: '/api/keys', headers: { 'x-api-key': key } }).then((response) => response.statusCode)

const isKeyLookup = (args: unknown[]) => (args[0] as { name?: string } | null)?.name === 'organization-by-key-hash'

/**
 * Lets key lookups started from now on run their query, then holds their answers until `release`: they have
 * read the organization as it was, and finish whenever the test says (after a rotation has committed).
 */
function holdKeyLookups (app: FastifyInstance) {
  let capturing = true
  let release = () => {}
  const released = new Promise<void>((resolve) => { release = resolve })
  const held = { read: 0 }
  const query = app.pg.query
  app.pg.query = (async (...args: Parameters<typeof query>) => {
    const hold = capturing && isKeyLookup(args)
    const result = await query.apply(app.pg.pool, args)
    if (hold) {
      held.read++
      await released
    }
    return result
  }) as typeof query
  return { held, stopCapturing: () => { capturing = false }, release }
}

/** Resolves once the app's listener has handled the organization's change notification (auth's handler runs first). */
function changeHeard (app: FastifyInstance, organizationId: string): Promise<void> {
  return new Promise((resolve) => {
    app.wakeUps.listen('triggers_organizations', (payload) => { if (payload === organizationId) resolve() })
  })
}

async function until (what: string, check: () => boolean): Promise<void> {
  for (let tries = 0; !check(); tries++) {
    if (tries > 3000) throw new Error(`gave up waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

t.test('lookups of the old key in flight during a rotation are not cached, on the rotating instance or another', async (t) => {
  const rotating = await buildTestApp(t)
  const serving = await buildTestApp(t)
  const organization = await createOrganization(rotating)
  const holds = [holdKeyLookups(rotating), holdKeyLookups(serving)]
  const IN_FLIGHT = 20
  const inFlight = [rotating, serving].flatMap((app) => Array.from({ length: IN_FLIGHT }, () => keyInfo(app, organization.key)))
  await until('every lookup to have read the old key', () => holds.every((hold) => hold.held.read === IN_FLIGHT))
  for (const hold of holds) hold.stopCapturing()

  const heard = changeHeard(serving, organization.id)
  const rotated = await rotating.inject({ method: 'POST', url: '/api/keys/rotate', headers: organization.headers })
  t.equal(rotated.statusCode, 200)
  await heard
  // Now the lookups that read the old row finish, after both instances have dropped the organization.
  for (const hold of holds) hold.release()
  t.same(new Set(await Promise.all(inFlight)), new Set([200]), 'requests that started before the rotation were let through')

  for (const app of [rotating, serving]) {
    t.same(await Promise.all(Array.from({ length: 10 }, () => keyInfo(app, organization.key))), Array(10).fill(401), 'the old key is refused')
    t.equal(await keyInfo(app, rotated.json().api_key), 200, 'the new key works')
  }
})

t.test('rotation under concurrent use: no request that starts after it has taken effect is accepted', async (t) => {
  const rotating = await buildTestApp(t)
  const serving = await buildTestApp(t)
  const organization = await createOrganization(rotating)
  // Cache misses and hits alike: the serving instance's cache starts empty, the rotating one's is warmed.
  await keyInfo(rotating, organization.key)
  const effective = { rotating: false, serving: false }
  const lateAccepted = { rotating: 0, serving: 0 }
  const lateRequests = { rotating: 0, serving: 0 }
  let stop = false
  let answered = 0
  const client = async (name: 'rotating' | 'serving', app: FastifyInstance) => {
    while (!stop) {
      const late = effective[name]
      const status = await keyInfo(app, organization.key)
      answered++
      if (late) {
        lateRequests[name]++
        if (status === 200) lateAccepted[name]++
      }
      // A cached answer involves no I/O: without a turn of the event loop, the clients would starve everything else.
      await nextTurn()
    }
  }
  const clients = [0, 1, 2, 3].flatMap(() => [client('rotating', rotating), client('serving', serving)])
  await until('the clients to be busy', () => answered >= 100)
  const heard = changeHeard(serving, organization.id)
  const rotated = await rotating.inject({ method: 'POST', url: '/api/keys/rotate', headers: organization.headers })
  t.equal(rotated.statusCode, 200)
  effective.rotating = true
  await heard
  effective.serving = true
  await until('requests after the rotation on both instances', () => lateRequests.rotating >= 200 && lateRequests.serving >= 200)
  stop = true
  await Promise.all(clients)
  t.same(lateAccepted, { rotating: 0, serving: 0 }, 'the old key was refused by every request that started after the rotation answered (or was heard)')
})
