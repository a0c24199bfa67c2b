import type { FastifyDynamicSwaggerOptions } from '@fastify/swagger'
import type { FastifySchema, RouteOptions } from 'fastify'
import { RATE_LIMIT_HEADERS } from '../schemas/errors.js'

/** The OpenAPI document's own parts: what the route schemas cannot say (the API, its security schemes, its tags). */
export const DOCUMENT_BASE: NonNullable<FastifyDynamicSwaggerOptions['openapi']> = {
  openapi: '3.0.3',
  info: {
    title: 'Triggers API',
    description: 'Send events, deduplicated and stored durably; consumers list and acknowledge them. ' +
      'Every error body is {statusCode, error, code, message} (schema Error). Every answer carries X-Request-Id.',
    version: '0.1.0',
    // The project is private and publishes no license: the document says so rather than name one.
    license: { name: 'UNLICENSED (private project, all rights reserved)' }
  },
  // Relative: the document is valid for whatever address and prefix the server is reached at.
  servers: [{ url: '/', description: 'The server that serves this document' }],
  components: {
    securitySchemes: {
      apiKey: { type: 'apiKey', in: 'header', name: 'X-API-Key' },
      bearer: { type: 'http', scheme: 'bearer', description: 'The same API key as a Bearer token' },
      adminToken: { type: 'apiKey', in: 'header', name: 'X-Admin-Token', description: 'ADMIN_TOKEN, on servers that set one' },
      statsToken: { type: 'http', scheme: 'bearer', description: 'STATS_TOKEN, on servers that set one' },
      metricsToken: { type: 'http', scheme: 'bearer', description: 'METRICS_TOKEN, on servers that set one' }
    }
  },
  tags: [
    { name: 'health', description: 'Liveness, readiness and process statistics' },
    { name: 'keys', description: 'API keys and organizations' },
    { name: 'events', description: 'Sending and reading events' },
    { name: 'inbox', description: 'Pulling, leasing and acknowledging events' },
    { name: 'webhooks', description: 'Push delivery to your endpoints, signed per Standard Webhooks' },
    { name: 'subscriptions', description: 'Independent pull consumers over the organization\'s events, each with its own position' }
  ]
}

const isRecord = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null

/**
 * The rate limiter's headers on the successful answers of every metered route: they depend on the route's
 * config (`rateLimit: false` opts out), not on its schema, so they are added to the document here.
 */
export function documentRateLimitHeaders ({ schema, url, route }: { schema: FastifySchema, url: string, route: RouteOptions }) {
  const metered = !(isRecord(route.config) && route.config.rateLimit === false)
  if (!metered || !isRecord(schema.response)) return { schema, url }
  const response = Object.fromEntries(Object.entries(schema.response).map(([status, answer]) => {
    if (!status.startsWith('2') || !isRecord(answer)) return [status, answer]
    return [status, { ...answer, headers: { ...RATE_LIMIT_HEADERS, ...(isRecord(answer.headers) ? answer.headers : {}) } }]
  }))
  return { schema: { ...schema, response }, url }
}

/**
 * Two corrections for code generators, throughout the document:
 * - The validators fill in defaults before they check `required` (Ajv's useDefaults), so a property or
 *   parameter with a default may be left out: the document says so, or generated clients would insist on it.
 * - TypeBox enums carry no `type`; one of strings is given `type: string`, as typed languages need.
 */
export function adjustForGenerators (node: unknown): void {
  if (Array.isArray(node)) {
    node.forEach(adjustForGenerators)
    return
  }
  if (!isRecord(node)) return
  const { properties, required } = node
  if (isRecord(properties) && Array.isArray(required)) {
    const withoutDefault = required.filter((name) => !(typeof name === 'string' && isRecord(properties[name]) && 'default' in properties[name]))
    if (withoutDefault.length > 0) node.required = withoutDefault
    else delete node.required
  }
  if (typeof node.in === 'string' && isRecord(node.schema) && 'default' in node.schema) node.required = false
  if (Array.isArray(node.enum) && node.type === undefined && node.enum.every((value) => typeof value === 'string')) node.type = 'string'
  Object.values(node).forEach(adjustForGenerators)
}
