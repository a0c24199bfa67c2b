import fp from 'fastify-plugin'
import { clearExpiredPreviousSecrets } from '../../db/webhooks.js'
import { createSecretBox, type SecretBox } from '../../lib/webhooks/secret-box.js'
import { resealWebhookSecrets } from '../../lib/webhooks/secret-reseal.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Seals webhook secrets for storage and opens them for signing (WEBHOOK_SECRET_KEYS). */
    webhookSecrets: SecretBox
  }
}

// Overlaps last hours; clearing a minute late keeps the sweep to one cheap statement a minute per process.
const SWEEP_INTERVAL_MS = 60_000
/**
 * Webhook secrets at rest: decorates the secret box, and keeps stored secrets tidy in the background. Keys only
 * change with a restart, so secrets stored under an older key (or in plain text) are re-encrypted once after
 * start-up; previous secrets whose overlap has ended are cleared every minute. Several instances may do both
 * at once: each row is replaced only if it still holds what was read.
 */
export default fp(async (fastify) => {
  fastify.decorate('webhookSecrets', createSecretBox(fastify.config.WEBHOOK_SECRET_KEYS))
  let timer: NodeJS.Timeout | undefined
  let running: Promise<void> = Promise.resolve()
  const inBackground = (what: string, work: () => Promise<void>) => {
    running = running.then(work).catch((error: unknown) => fastify.log.warn({ err: error }, `could not ${what}`))
  }

  fastify.addHook('onReady', async () => {
    inBackground('re-encrypt webhook secrets', async () => {
      const { resealed, unreadable } = await resealWebhookSecrets(fastify.pg, fastify.webhookSecrets)
      if (resealed > 0) fastify.log.info({ resealed }, 'webhook secrets re-encrypted with the first key of WEBHOOK_SECRET_KEYS')
      if (unreadable > 0) fastify.log.error({ unreadable }, 'webhook secrets encrypted with a key missing from WEBHOOK_SECRET_KEYS; their endpoints cannot be signed')
    })
    const sweep = () => inBackground('clear expired previous webhook secrets', async () => { await clearExpiredPreviousSecrets(fastify.pg) })
    sweep()
    timer = setInterval(sweep, SWEEP_INTERVAL_MS).unref()
  })
  // Registered after the pool: runs before it closes, so a sweep under way finishes first.
  fastify.addHook('onClose', async () => {
    clearInterval(timer)
    await running
  })
}, { name: 'webhook-secrets', dependencies: ['postgres', 'config'] })
