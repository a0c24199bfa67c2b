import { createHash, randomBytes } from 'node:crypto'
import { bearerTokenOf } from './tokens.js'

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

/** The API key a request presents: the X-API-Key header, else an `Authorization: Bearer` token. */
export function presentedApiKey (headers: { 'x-api-key'?: string | string[] | undefined, authorization?: string | undefined }): string | undefined {
  const header = headers['x-api-key']
  if (typeof header === 'string' && header !== '') return header.trim()
  return bearerTokenOf(headers.authorization)
}
