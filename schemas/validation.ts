import { Ajv, type ValidateFunction } from 'ajv'
import addFormats from 'ajv-formats'
import type { FastifySchemaCompiler } from 'fastify'
import { NAMED_SCHEMAS } from './components.js'

function createAjv (coerceTypes: boolean | 'array'): Ajv {
  // removeAdditional stays off so unknown fields are refused rather than silently dropped.
  const ajv = new Ajv({ coerceTypes, useDefaults: true, removeAdditional: false, allErrors: false, strict: false })
  addFormats.default(ajv)
  // ajv-formats' uuid also takes a `urn:uuid:` prefix, which PostgreSQL's uuid type refuses (as a 500, or a
  // misleading 400): ids are accepted in the form PostgreSQL reads, any case.
  ajv.addFormat('uuid', /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i)
  // Route schemas refer to the named ones by $id; Fastify hands them only to its own compilers, not to ours.
  ajv.addSchema(NAMED_SCHEMAS)
  return ajv
}

// JSON bodies are typed already: `"type": 123` must be an error, not the string "123".
const bodyAjv = createAjv(false)
// Query strings, params and headers arrive as text and are coerced to the schema's types.
const textAjv = createAjv('array')

export const validatorCompiler: FastifySchemaCompiler<object> = ({ schema, httpPart }) =>
  (httpPart === 'body' ? bodyAjv : textAjv).compile(schema)

/** Validates a JSON value the way request bodies are validated (used for batch items one by one). */
export function compileBodyValidator<T> (schema: object): ValidateFunction<T> {
  return bodyAjv.compile<T>(schema)
}
