import { Type, type Static } from 'typebox'
import { Timestamp, Uuid } from './common.js'

export const TIERS = ['free', 'starter', 'professional', 'enterprise'] as const
export const Tier = Type.Enum(TIERS, { description: 'Rate-limit tier' })
export type Tier = Static<typeof Tier>

export const GenerateKeyBody = Type.Object({
  organization_name: Type.String({ minLength: 1, maxLength: 255 }),
  tier: Type.Optional(Tier)
}, { $id: 'GenerateKeyBody', additionalProperties: false })
export type GenerateKeyBody = Static<typeof GenerateKeyBody>

const apiKey = Type.String({ description: 'The full API key. Shown only in this response: store it now.' })
const keyPrefix = Type.String({ description: 'First characters of the key, to recognise it later' })

export const ApiKey = Type.Object({
  api_key: apiKey,
  key_prefix: keyPrefix,
  organization_id: Uuid,
  organization_name: Type.String(),
  tier: Tier,
  created_at: Timestamp
}, { $id: 'ApiKey', description: 'A new API key and the organization it belongs to' })

export const KeyInfo = Type.Object({
  organization_id: Uuid,
  organization_name: Type.String(),
  tier: Tier,
  key_prefix: keyPrefix,
  rate_limit_per_minute: Type.Union([Type.Integer(), Type.Null()], { description: 'null means unlimited' }),
  created_at: Timestamp
}, { $id: 'KeyInfo' })

export const RotatedKey = Type.Object({ api_key: apiKey, key_prefix: keyPrefix }, { $id: 'RotatedKey' })
