import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { randomUUID } from 'node:crypto'
import { Type } from 'typebox'
import { listAttempts, type AttemptRow } from '../../../db/deliveries.js'
import { inTransaction } from '../../../db/transaction.js'
import {
  deleteWebhook, findWebhook, insertWebhookWithinLimit, listWebhooks, rotateWebhookSecret, updateWebhook, type WebhookRow
} from '../../../db/webhooks.js'
import { apiError } from '../../../lib/api-error.js'
import { createWebhookSender } from '../../../lib/webhooks/send.js'
import type { SecretBox } from '../../../lib/webhooks/secret-box.js'
import { activeSecrets, createWebhookSecret, maskSecret, signWebhook } from '../../../lib/webhooks/signing.js'
import { refuseWebhookUrl } from '../../../lib/webhooks/url-guard.js'
import { organizationOf } from '../../../plugins/app/auth.js'
import { errorResponses } from '../../../schemas/errors.js'
import { ref } from '../../../schemas/ref.js'
import {
  CreateWebhookBody, DeliveriesQuery, DeliveryPage, UpdateWebhookBody, Webhook,
  WebhookList, WebhookParams, WebhookTestResult
} from '../../../schemas/webhooks.js'

/** The response body; `newSecret` is shown in full (creation and rotation), otherwise the stored one is masked. */
function toWebhookBody (row: WebhookRow, box: SecretBox, newSecret?: string) {
  return {
    id: row.id,
    url: row.url,
    event_types: row.event_types,
    description: row.description,
    enabled: row.enabled,
    disabled_reason: row.disabled_reason,
    secret: newSecret ?? maskSecret(box.open(row.secret)),
    created_at: row.created_at.toISOString(),
    updated_at: row.updated_at.toISOString()
  }
}

function toAttemptBody (row: AttemptRow) {
  return {
    event_id: row.event_id,
    attempt: row.attempt,
    status: row.status,
    response_status: row.response_status,
    error: row.error,
    duration_ms: row.duration_ms,
    attempted_at: row.attempted_at.toISOString(),
    next_attempt_at: row.next_attempt_at?.toISOString() ?? null
  }
}

const MAX_BIGINT = 2n ** 63n - 1n

/** A deliveries cursor is an attempt id, a PostgreSQL bigint: nineteen digits may still exceed it. */
function attemptCursor (cursor: string | undefined): string | null {
  if (cursor === undefined) return null
  if (BigInt(cursor) > MAX_BIGINT) throw apiError('badRequest', 'invalid_cursor', 'cursor is not a next_cursor value from this API')
  return cursor
}

const notFound = (id: string) => apiError('notFound', 'not_found', `Webhook ${id} not found`)

const routes: FastifyPluginAsyncTypebox = async (fastify) => {
  const { config, webhookSecrets: box } = fastify
  // Test sends go through the same pinned, SSRF-guarded connections as deliveries, under the same deadline. No cap
  // per origin: one would queue an organization's test behind another's stuck one on a shared host.
  const testSender = createWebhookSender({ timeoutMs: config.WEBHOOK_TIMEOUT_MS, allowPrivateUrls: config.WEBHOOK_ALLOW_PRIVATE_URLS })
  fastify.addHook('onClose', testSender.close)

  const checkUrl = async (url: string) => {
    const refused = await refuseWebhookUrl(url, config.WEBHOOK_ALLOW_PRIVATE_URLS)
    if (refused !== undefined) throw apiError('badRequest', 'invalid_webhook_url', refused)
  }

  fastify.post('/webhooks', {
    schema: {
      tags: ['webhooks'],
      operationId: 'createWebhook',
      summary: 'Register an endpoint; the signing secret is shown in full only in this response',
      body: ref(CreateWebhookBody),
      response: {
        201: ref(Webhook, {
          description: 'Registered (secret in full)',
          headers: { Location: { type: 'string', description: 'The endpoint\'s URL, /api/webhooks/{id}' } }
        }),
        ...errorResponses(400, 401, 409, 413, 415, 429, 503)
      }
    }
  }, async (request, reply) => {
    await checkUrl(request.body.url)
    const secret = createWebhookSecret()
    const fields = {
      url: request.body.url,
      event_types: request.body.event_types ?? [],
      description: request.body.description ?? null,
      secret: box.seal(secret)
    }
    const max = config.WEBHOOKS_PER_ORGANIZATION
    // Each endpoint adds an outbox row to every matching event's INSERT: the cap bounds what one organization costs ingest.
    const row = await inTransaction(fastify.pg.pool, (client) => insertWebhookWithinLimit(client, organizationOf(request).id, fields, max))
    if (!row) throw apiError('conflict', 'webhook_limit_reached', `An organization may have at most ${max} webhooks; delete one first`)
    return reply.code(201).header('location', `/api/webhooks/${row.id}`).send(toWebhookBody(row, box, secret))
  })

  fastify.get('/webhooks', {
    schema: {
      operationId: 'listWebhooks',
      tags: ['webhooks'],
      summary: 'All endpoints (secrets masked)',
      response: { 200: ref(WebhookList, { description: 'The endpoints' }), ...errorResponses(401, 429, 503) }
    }
  }, async (request) => ({ webhooks: (await listWebhooks(fastify.pg, organizationOf(request).id)).map((row) => toWebhookBody(row, box)) }))

  fastify.get('/webhooks/:id', {
    schema: {
      operationId: 'getWebhook',
      tags: ['webhooks'],
      summary: 'One endpoint (secret masked)',
      params: WebhookParams,
      response: { 200: ref(Webhook, { description: 'The endpoint' }), ...errorResponses(400, 401, 404, 429, 503) }
    }
  }, async (request) => {
    const row = await findWebhook(fastify.pg, organizationOf(request).id, request.params.id)
    if (!row) throw notFound(request.params.id)
    return toWebhookBody(row, box)
  })

  fastify.patch('/webhooks/:id', {
    schema: {
      tags: ['webhooks'],
      operationId: 'updateWebhook',
      summary: 'Change url, event_types, description or enabled (re-enabling resumes deliveries)',
      params: WebhookParams,
      body: ref(UpdateWebhookBody),
      response: { 200: ref(Webhook, { description: 'The endpoint as changed' }), ...errorResponses(400, 401, 404, 413, 415, 429, 503) }
    }
  }, async (request) => {
    if (request.body.url !== undefined) await checkUrl(request.body.url)
    const row = await updateWebhook(fastify.pg, organizationOf(request).id, request.params.id, request.body)
    if (!row) throw notFound(request.params.id)
    return toWebhookBody(row, box)
  })

  fastify.delete('/webhooks/:id', {
    schema: {
      operationId: 'deleteWebhook',
      tags: ['webhooks'],
      summary: 'Remove an endpoint; its pending deliveries stop',
      params: WebhookParams,
      response: { 204: Type.Null({ description: 'Deleted' }), ...errorResponses(400, 401, 404, 413, 415, 429, 503) }
    }
  }, async (request, reply) => {
    if (!await deleteWebhook(fastify.pg, organizationOf(request).id, request.params.id)) throw notFound(request.params.id)
    return reply.code(204).send(null)
  })

  fastify.post('/webhooks/:id/rotate-secret', {
    schema: {
      tags: ['webhooks'],
      operationId: 'rotateWebhookSecret',
      summary: 'New signing secret; the old one also signs for WEBHOOK_SECRET_OVERLAP_SECONDS',
      params: WebhookParams,
      response: { 200: ref(Webhook, { description: 'The endpoint with its new secret in full' }), ...errorResponses(400, 401, 404, 413, 415, 429, 503) }
    }
  }, async (request) => {
    const secret = createWebhookSecret()
    const row = await rotateWebhookSecret(fastify.pg, organizationOf(request).id, request.params.id, box.seal(secret), config.WEBHOOK_SECRET_OVERLAP_SECONDS)
    if (!row) throw notFound(request.params.id)
    return toWebhookBody(row, box, secret)
  })

  fastify.get('/webhooks/:id/deliveries', {
    schema: {
      tags: ['webhooks'],
      operationId: 'listWebhookDeliveries',
      summary: 'Delivery attempts to this endpoint, newest first',
      params: WebhookParams,
      querystring: DeliveriesQuery,
      response: { 200: ref(DeliveryPage, { description: 'A page of delivery attempts' }), ...errorResponses(400, 401, 404, 429, 503) }
    }
  }, async (request) => {
    const { limit, cursor, status } = request.query
    const beforeId = attemptCursor(cursor)
    const webhook = await findWebhook(fastify.pg, organizationOf(request).id, request.params.id)
    if (!webhook) throw notFound(request.params.id)
    const rows = await listAttempts(fastify.pg, webhook.id, { status: status ?? null, beforeId, limit })
    const page = rows.slice(0, limit)
    return { deliveries: page.map(toAttemptBody), next_cursor: rows.length > limit ? page.at(-1)?.id ?? null : null }
  })

  fastify.post('/webhooks/:id/test', {
    schema: {
      tags: ['webhooks'],
      operationId: 'testWebhook',
      summary: 'Send a webhook.test event now and return the outcome (not retried, not recorded)',
      params: WebhookParams,
      response: { 200: ref(WebhookTestResult, { description: 'How the endpoint answered' }), ...errorResponses(400, 401, 404, 413, 415, 429, 503) }
    }
  }, async (request) => {
    const webhook = await findWebhook(fastify.pg, organizationOf(request).id, request.params.id)
    if (!webhook) throw notFound(request.params.id)
    const signed = signWebhook(`msg_test_${randomUUID()}`, 'webhook.test', JSON.stringify({ webhook_id: webhook.id }), activeSecrets(webhook, box))
    const outcome = await testSender.send(webhook.url, signed)
    return { success: outcome.succeeded, response_status: outcome.responseStatus, error: outcome.error, duration_ms: outcome.durationMs }
  })
}

export default routes
