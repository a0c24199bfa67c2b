import { createHash, randomBytes } from 'node:crypto'

const KEY_PREFIX_LENGTH = 11

export interface NewApiKey {
  key: string
  hash: Buffer
  prefix: string
}

/** `sk_` + 43 base64url characters (256 random bits). */
export function createApiKey (): NewApiKey {
  const key = `sk_${randomBytes(32).toString('base64url')}`
  return { key, hash: hashApiKey(key), prefix: key.slice(0, KEY_PREFIX_LENGTH) }
}

// Keys carry 256 random bits, so a fast unsalted hash is enough: nothing can be guessed offline.
export function hashApiKey (key: string): Buffer {
  return createHash('sha256').update(key).digest()
}
