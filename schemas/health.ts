import { Type } from 'typebox'
import { ErrorResponse } from './errors.js'
import { ref } from './ref.js'

export const Liveness = Type.Object({ status: Type.Literal('ok') }, { $id: 'Liveness' })

export const PoolStats = Type.Object({
  total: Type.Integer({ description: 'Clients open' }),
  idle: Type.Integer({ description: 'Clients open and not checked out' }),
  waiting: Type.Integer({ description: 'Queries waiting for a client' })
}, { $id: 'PoolStats', description: "This process's database connection pool" })

export const Pressure = Type.Object({
  overloaded: Type.Boolean({ description: 'Whether requests are being shed with 503 overloaded' }),
  event_loop_delay_ms: Type.Integer({ description: 'Mean event-loop delay over the last sample (-1: no timer ran in it at all)' }),
  heap_used_mb: Type.Integer(),
  rss_mb: Type.Integer()
}, { $id: 'Pressure', description: "This process's load, sampled every OVERLOAD_SAMPLE_INTERVAL_MS" })

export const Readiness = Type.Object({ status: Type.Literal('ok'), database: Type.Literal('ok'), pool: ref(PoolStats), pressure: ref(Pressure) }, { $id: 'Readiness' })

export const NotReady = Type.Intersect([ref(ErrorResponse), Type.Object({ pool: ref(PoolStats), pressure: ref(Pressure) })], {
  $id: 'NotReady',
  description: 'The database did not answer (code database_unavailable), or requests are being shed (code overloaded)'
})

export const CacheStats = Type.Object({
  size: Type.Integer(),
  max_size: Type.Integer(),
  hits: Type.Integer(),
  misses: Type.Integer()
}, { $id: 'CacheStats', description: 'Dedup cache statistics of this process' })

export const IngestStats = Type.Object({
  groups: Type.Integer({ description: 'shared INSERT statements written' }),
  events: Type.Integer({ description: 'events they carried' }),
  largest_group: Type.Integer(),
  isolated_failures: Type.Integer({ description: 'writes that failed when retried alone after their group failed' }),
  overloaded: Type.Integer({ description: 'writes refused with 503 overloaded because the queue was full' })
}, { $id: 'IngestStats', description: 'Group commit statistics of this process' })
