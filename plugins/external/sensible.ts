import fp from 'fastify-plugin'
import sensible from '@fastify/sensible'

/** @fastify/sensible: HTTP error helpers on the instance and reply (lib/api-error.ts builds on its error classes). */
export default fp(async (fastify) => {
  await fastify.register(sensible)
}, { name: 'sensible' })
