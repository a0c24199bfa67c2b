import { Type, type Static, type TSchema, type TSchemaOptions, type TUnsafe } from 'typebox'

/**
 * A reference to a named schema (one with an `$id`, listed in schemas/components.ts). It is sent as
 * `{ "$ref": "<$id>" }`, which the validators and serializers resolve and the OpenAPI document shows as
 * `#/components/schemas/<$id>`, yet it keeps the named schema's static type for the handlers.
 */
export function ref<T extends TSchema> (schema: T, options: TSchemaOptions = {}): TUnsafe<Static<T>> {
  const { $id } = schema as { $id?: string }
  if ($id === undefined) throw new Error('ref() needs a schema with an $id')
  return Type.Unsafe<Static<T>>(Type.Ref($id, options))
}
