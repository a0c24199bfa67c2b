import fp from 'fastify-plugin'
import type { Config } from '../../lib/config.js'

declare module 'fastify' {
  interface FastifyInstance {
    config: Config
  }
}

/** The validated settings (lib/config.ts), loaded once by the entry point and shared by every plugin. */
export default fp<{ config: Config }>(async (fastify, { config }) => {
  fastify.decorate('config', config)
}, { name: 'config' })
