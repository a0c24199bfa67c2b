import fp from 'fastify-plugin'
import { WorkerMetrics } from '../../lib/metrics.js'
import { serveMetrics } from '../../lib/metrics-server.js'

declare module 'fastify' {
  interface FastifyInstance {
    workerMetrics: WorkerMetrics
  }
}

/**
 * The separate delivery worker's metrics (it has no routes, so none of the API's request metrics), served on
 * WORKER_METRICS_PORT when it is set. The port is taken here, at registration, so one already in use stops
 * start-up before anything is claimed; it closes before the pool does (onClose runs last-registered first),
 * since a scrape reads the queue through the pool.
 */
export default fp(async (fastify) => {
  const metrics = new WorkerMetrics({ pool: fastify.pg.pool, wakeUps: fastify.wakeUps, log: fastify.log })
  fastify.decorate('workerMetrics', metrics)
  const { HOST: host, WORKER_METRICS_PORT: port, METRICS_TOKEN: token } = fastify.config
  if (port === 0) return
  const server = await serveMetrics(metrics, { host, port, token, log: fastify.log })
  fastify.log.info({ host, port: server.port }, 'worker metrics at /metrics')
  fastify.addHook('onClose', async () => { await server.close() })
}, { name: 'worker-metrics', dependencies: ['postgres', 'config', 'wake-ups'] })
