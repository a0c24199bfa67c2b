import { httpErrors, type HttpError } from '@fastify/sensible'
import { STATUS_CODES } from 'node:http'
import type { ErrorBody } from '../schemas/errors.js'

type ErrorKind = 'badRequest' | 'unauthorized' | 'forbidden' | 'notFound' | 'conflict' | 'tooManyRequests' | 'serviceUnavailable'

/** An HTTP error carrying the stable machine-readable `code` that the error handler puts in the body. */
export function apiError (kind: ErrorKind, code: string, message: string): HttpError {
  return Object.assign(httpErrors[kind](message), { code })
}

/** The body of every 4xx/5xx answer: {statusCode, error, code, message}. */
export function errorBody (statusCode: number, code: string, message: string): ErrorBody {
  return { statusCode, error: STATUS_CODES[statusCode] ?? 'Error', code, message }
}
