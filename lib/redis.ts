import { Redis } from 'ioredis'

/**
 * Connects to REDIS_URL for the shared rate-limit counters. Commands fail fast instead of queueing while Redis
 * is away, so an outage costs enforcement, not availability; a failed first connection is a start-up error.
 */
export async function connectRedis (url: string, warn: (error: Error) => void): Promise<Redis> {
  const redis = new Redis(url, { connectTimeout: 1000, maxRetriesPerRequest: 1, enableOfflineQueue: false, lazyConnect: true })
  redis.on('error', warn)
  await redis.connect().catch((error: unknown) => {
    redis.disconnect()
    throw new Error(`Cannot reach Redis at REDIS_URL: ${error instanceof Error ? error.message : String(error)}`)
  })
  return redis
}

/** quit() fails when Redis is unreachable; closing must still succeed, so it falls back to dropping the socket. */
export async function closeRedis (redis: Redis): Promise<void> {
  await redis.quit().catch(() => redis.disconnect())
}
