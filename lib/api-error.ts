import { httpErrors, type HttpError } from '@fastify/sensible'

type ErrorKind = 'badRequest' | 'unauthorized' | 'forbidden' | 'notFound' | 'conflict' | 'tooManyRequests' | 'serviceUnavailable'

/** An HTTP error carrying the stable machine-readable `code` that the error handler puts in the body. */
export function apiError (kind: ErrorKind, code: string, message: string): HttpError {
  return Object.assign(httpErrors[kind](message), { code })
}
