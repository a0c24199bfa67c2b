import t from 'tap'
import type { FastifyError } from 'fastify'
import { describeError } from '../../lib/api-error.js'

const failure = (message: string, code?: string) => Object.assign(new Error(message), code === undefined ? {} : { code }) as FastifyError

t.test('a lost or unreachable database is a 503 database_unavailable, whatever pg calls it; anything else unknown is a 500', async (t) => {
  const unavailable: Array<[string, string | undefined]> = [
    ['terminating connection due to administrator command', '57P01'],
    ['connect ECONNREFUSED 127.0.0.1:5432', 'ECONNREFUSED'],
    ['Connection terminated unexpectedly', undefined],
    ['Connection terminated', undefined],
    ['Client has encountered a connection error and is not queryable', undefined],
    ['timeout exceeded when trying to connect', undefined],
    // pg-pool's, when a new connection's handshake outlasts the connect timeout (seen under overload with a cold key cache).
    ['Connection terminated due to connection timeout', undefined]
  ]
  for (const [message, code] of unavailable) {
    t.match(describeError(failure(message, code)), { statusCode: 503, code: 'database_unavailable' }, message)
  }
  const internal = describeError(failure('Connection terminated by a bug of ours somewhere'))
  t.match(internal, { statusCode: 500, code: 'internal_error' }, 'only the exact messages count')
  t.notMatch(internal.message, /Connection/, 'and a 500 does not echo the error')
})
