import { createHash, timingSafeEqual } from 'node:crypto'

const BEARER = /^Bearer\s+(\S+)\s*$/i

/** The token of an `Authorization: Bearer <token>` header; undefined without one. */
export function bearerTokenOf (authorization: string | undefined): string | undefined {
  return BEARER.exec(authorization ?? '')?.[1]
}

/** Compares in constant time; comparing digests also keeps the expected token's length from leaking. */
export function sameSecret (given: string, expected: string): boolean {
  const digest = (text: string) => createHash('sha256').update(text).digest()
  return timingSafeEqual(digest(given), digest(expected))
}

/** True when no token is configured (`expected` undefined), or `given` is that token. */
export function tokenAccepted (expected: string | undefined, given: unknown): boolean {
  return expected === undefined || (typeof given === 'string' && sameSecret(given, expected))
}
