import t from 'tap'
import { buildTestApp } from './support/helpers.js'

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/

t.test('a client X-Request-Id is used only in a strict form and length; otherwise one is generated', async (t) => {
  const app = await buildTestApp(t)
  const idFor = async (header: string | undefined) => {
    const response = await app.inject({ method: 'GET', url: '/health', headers: header === undefined ? {} : { 'x-request-id': header } })
    return response.headers['x-request-id']
  }
  for (const kept of ['req-123', '0f8fad5b-d9cb-469f-a165-70867728950e', '01ARZ3NDEKTSV4RRFFQ69G5FAV', 'svc.a:trace_9', 'a'.repeat(64)]) {
    t.equal(await idFor(kept), kept, `kept: ${kept}`)
  }
  for (const replaced of ['', 'a'.repeat(65), 'two words', '"quoted"', '<script>', '-leading-dash', 'ümlaut', 'a,b', 'id\tx']) {
    t.match(await idFor(replaced), UUID, `replaced: ${JSON.stringify(replaced)}`)
  }
  t.match(await idFor(undefined), UUID, 'generated when absent')
})
