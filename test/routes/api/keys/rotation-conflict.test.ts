import type { FastifyInstance } from 'fastify'
import t from 'tap'
import { buildTestApp, createOrganization } from '../../../support/helpers.js'
import { waitFor } from '../../../support/webhooks.js'

const ADDRESS = '198.51.100.40'

const keyInfo = (app: FastifyInstance, key: string, remoteAddress = ADDRESS) =>
  app.inject({ method: 'GET', url: '/api/keys', headers: { 'x-api-key': key }, remoteAddress }).then((response) => response.statusCode)

const rotate = (app: FastifyInstance, key: string) =>
  app.inject({ method: 'POST', url: '/api/keys/rotate', headers: { 'x-api-key': key }, remoteAddress: ADDRESS })

t.test('concurrent rotations with one key: exactly one wins, the others get 409 or 401', async (t) => {
  const first = await buildTestApp(t)
  const second = await buildTestApp(t)
  for (let round = 0; round < 5; round++) {
    const organization = await createOrganization(first)
    // Both instances know the key, so every rotation passes authentication and races to the database.
    await keyInfo(first, organization.key)
    await keyInfo(second, organization.key)
    const answers = await Promise.all([first, second, first, second].map((app) => rotate(app, organization.key)))
    const winners = answers.filter((answer) => answer.statusCode === 200)
    t.equal(winners.length, 1, `round ${round}: exactly one rotation won`)
    for (const loser of answers.filter((answer) => answer.statusCode !== 200)) {
      t.ok([409, 401].includes(loser.statusCode), `round ${round}: a losing rotation answered ${loser.statusCode}`)
    }
    const winningKey = winners[0]?.json<{ api_key: string }>().api_key ?? ''
    t.equal(await keyInfo(first, winningKey), 200, 'the winner\'s key works')
    await waitFor('the other instance to drop the old key', async () => await keyInfo(second, organization.key) === 401)
    t.equal(await keyInfo(second, winningKey), 200, 'on both instances')
  }
})
