import Fastify, { LogController, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { processPoolMax, trustProxyOption, type Config } from './lib/config.js'
import { describeError } from './lib/api-error.js'
import { loggerOptions, requestIdOf } from './lib/logging.js'
import authPlugin from './plugins/app/auth.js'
import configPlugin from './plugins/app/config.js'
import dedupPlugin from './plugins/app/dedup.js'
import deliveryWorkerPlugin from './plugins/app/delivery-worker.js'
import errorsPlugin from './plugins/app/errors.js'
import groupCommitPlugin from './plugins/app/group-commit.js'
import metricsPlugin from './plugins/app/metrics.js'
import operatorTokensPlugin from './plugins/app/operator-tokens.js'
import retentionPlugin from './plugins/app/retention.js'
import wakeUpsPlugin from './plugins/app/wake-ups.js'
import webhookSecretsPlugin from './plugins/app/webhook-secrets.js'
import workerMetricsPlugin from './plugins/app/worker-metrics.js'
import postgresPlugin from './plugins/external/postgres.js'
import rateLimitPlugin from './plugins/external/rate-limit.js'
import sensiblePlugin from './plugins/external/sensible.js'
import swaggerPlugin from './plugins/external/swagger.js'
import underPressurePlugin from './plugins/external/under-pressure.js'
import apiRoutes from './routes/api/index.js'
import healthRoutes from './routes/health/index.js'
import metricsRoutes from './routes/metrics/index.js'
import statsRoutes from './routes/stats/index.js'
import { validatorCompiler } from './schemas/validation.js'
import { NAMED_SCHEMAS } from './schemas/components.js'

const BODY_LIMIT_BYTES = 256 * 1024
/** Node checks request and header timeouts this often (its default, 30 s, would let a timed-out request live that much longer). */
const TIMEOUT_CHECK_MS = 1000

export interface AppOptions {
  config: Config
  /** The server to use: DATABASE_URL, or the embedded server that server.ts started. */
  databaseUrl: string
  /** False in a cluster child (server.ts): the primary ran the migrations before forking. Default true. */
  migrate?: boolean
}

/**
 * Many clients send `Content-Type: application/json` on body-less POSTs (rotate, ack). Fastify refuses those;
 * we treat the empty body as absent, so routes that need a body still fail validation with a clear message.
 */
function acceptEmptyJsonBodies (app: FastifyInstance): void {
  const parseJson = app.getDefaultJsonParser('error', 'error')
  app.removeContentTypeParser('application/json')
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    if (body.length === 0) done(null, undefined)
    else parseJson(request, body.toString(), done)
  })
}

/**
 * Whether the request's body has arrived. Node hands a request over (and runs what that starts, to the end of
 * its microtasks) before it parses the body that came in the same packet, so a request looks incomplete then:
 * it is judged again once the packet has been read. Injected requests have no `complete`: they are whole.
 */
async function bodyArrived (request: { complete?: boolean }): Promise<boolean> {
  if (request.complete !== false) return true
  await new Promise((resolve) => setImmediate(resolve))
  return request.complete
}

/**
 * One access line per request, written when it completes (method, url, status, time), instead of Fastify's
 * two: serializing log lines is a large share of a cheap request's CPU.
 */
class OneLinePerRequest extends LogController {
  override incomingRequest (): void {}

  override requestCompleted (error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    if (this.isLogDisabled(request)) return
    const details = { req: request, res: reply, responseTime: reply.elapsedTime }
    if (error) reply.log.error({ ...details, err: error }, 'request errored')
    else reply.log.info(details, 'request completed')
  }
}

/**
 * What the router refuses before any route or hook runs (broken percent-encoding, a parameter over its 100
 * characters) gets the API's error body and request id, like every other refusal, instead of Fastify's own.
 */
function answerRouterRefusal (error: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  const body = describeError(error)
  reply.code(body.statusCode).header('x-request-id', request.id).send(body)
}

/**
 * Builds the whole service. Plugins are registered explicitly (not autoloaded) so the order that matters is
 * visible here, each with its reason; routes come last, after everything they use.
 */
export async function buildApp ({ config, databaseUrl, migrate = true }: AppOptions): Promise<FastifyInstance> {
  // LISTEN and migrations need a session of their own: DATABASE_DIRECT_URL when DATABASE_URL is a pooler.
  const directUrl = config.DATABASE_DIRECT_URL ?? databaseUrl
  const app = Fastify({
    logger: loggerOptions(config.LOG_LEVEL),
    bodyLimit: BODY_LIMIT_BYTES,
    // A client that trickles its request (slowloris) is cut off: 408, connection closed.
    requestTimeout: config.REQUEST_TIMEOUT_MS,
    http: {
      headersTimeout: config.REQUEST_HEADERS_TIMEOUT_MS,
      connectionsCheckingInterval: Math.min(TIMEOUT_CHECK_MS, config.REQUEST_HEADERS_TIMEOUT_MS)
    },
    trustProxy: trustProxyOption(config.TRUST_PROXY),
    // genReqId reads X-Request-Id itself, keeping only a strict form (lib/logging.ts).
    requestIdHeader: false,
    genReqId: (request) => requestIdOf(request.headers),
    logController: new OneLinePerRequest(),
    frameworkErrors: answerRouterRefusal,
    // On close, idle keep-alive sockets are dropped at once; requests in flight finish first.
    forceCloseConnections: 'idle'
  }).withTypeProvider<TypeBoxTypeProvider>()
  app.setValidatorCompiler(validatorCompiler)
  // The schemas that routes refer to by $id: for the response serializers and the OpenAPI document.
  for (const schema of NAMED_SCHEMAS) app.addSchema(schema)
  // JSON only: a text/plain body is refused with 415 instead of reaching validation as a string.
  app.removeContentTypeParser('text/plain')
  acceptEmptyJsonBodies(app)
  // Answers sent while closing (long polls woken by shutdown) also close their connection; left keep-alive,
  // the server would wait for them until keepAliveTimeout. So do answers sent before the request's body has
  // arrived (a refusal in onRequest): kept alive, the connection would wait for the rest of the body, however
  // slowly the client sends it, before it could read the next request.
  let closing = false
  app.addHook('preClose', async () => { closing = true })
  app.addHook('onSend', async (request, reply) => {
    reply.header('x-request-id', request.id)
    if (closing || !await bodyArrived(request.raw)) reply.header('connection', 'close')
  })

  await app.register(configPlugin, { config })
  await app.register(sensiblePlugin)
  await app.register(errorsPlugin)
  await app.register(operatorTokensPlugin)
  await app.register(postgresPlugin, { ...poolOptions(config, databaseUrl), applicationName: 'triggers-api', migrate, poolMax: processPoolMax(config) })
  // Right after the pool: its NOTIFYs need the pool, and everything that waits or caches needs its listener.
  await app.register(wakeUpsPlugin, { databaseUrl: directUrl, applicationName: 'triggers-api-listener' })
  // Today's partitions must exist before the first insert.
  await app.register(retentionPlugin)
  // Before everything that counts into it (rate limit, group commit, the worker) and every route (each gets its timer).
  await app.register(metricsPlugin)
  // Its onRequest hook sheds load before any other does work (the address budget, the key lookup, the body).
  await app.register(underPressurePlugin)
  // Before auth, which peeks at an address's budget before it looks a key up.
  await app.register(rateLimitPlugin)
  await app.register(authPlugin)
  await app.register(dedupPlugin)
  await app.register(groupCommitPlugin)
  await app.register(webhookSecretsPlugin)
  if (config.WEBHOOK_WORKER === 'on') await app.register(deliveryWorkerPlugin, { onAttempt: app.metrics.observeAttempt })
  // Must see every route: registered before them.
  await app.register(swaggerPlugin)

  await app.register(healthRoutes)
  await app.register(statsRoutes)
  await app.register(metricsRoutes)
  await app.register(apiRoutes, { prefix: '/api' })
  return app
}

/** The pool settings both kinds of process share. */
function poolOptions (config: Config, databaseUrl: string) {
  return {
    databaseUrl,
    // LISTEN and migrations need a session of their own: DATABASE_DIRECT_URL when DATABASE_URL is a pooler.
    directUrl: config.DATABASE_DIRECT_URL ?? databaseUrl,
    connectTimeoutMs: config.DATABASE_CONNECT_TIMEOUT_MS,
    statementTimeoutMs: config.DATABASE_STATEMENT_TIMEOUT_MS,
    preparedStatements: config.DATABASE_PREPARED_STATEMENTS
  }
}

/**
 * The separate delivery worker's process (worker.ts): the API's plugins for the pool (migrated), the wake-up
 * listener, the webhook secret box and the delivery loop, with its own metrics and no routes or API server.
 */
export async function buildWorkerApp ({ config, databaseUrl }: Omit<AppOptions, 'migrate'>): Promise<FastifyInstance> {
  const directUrl = config.DATABASE_DIRECT_URL ?? databaseUrl
  const app = Fastify({ logger: { ...loggerOptions(config.LOG_LEVEL), name: 'triggers-worker' } })
  await app.register(configPlugin, { config })
  await app.register(postgresPlugin, { ...poolOptions(config, databaseUrl), applicationName: 'triggers-worker', migrate: true, poolMax: config.DATABASE_POOL_MAX })
  await app.register(wakeUpsPlugin, { databaseUrl: directUrl, applicationName: 'triggers-worker-listener' })
  await app.register(webhookSecretsPlugin)
  await app.register(workerMetricsPlugin)
  await app.register(deliveryWorkerPlugin, { onAttempt: app.workerMetrics.observeAttempt })
  return app
}
