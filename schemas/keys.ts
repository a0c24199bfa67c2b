import { Type, type Static } from 'typebox'

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
const timestamp = Type.String({ format: 'date-time' })

export const ApiKey = Type.Object({
  api_key: apiKey,
  key_prefix: keyPrefix,
  organization_id: Type.String({ format: 'uuid' }),
  organization_name: Type.String(),
  tier: Tier,
  created_at: timestamp
}, { $id: 'ApiKey', description: 'A new API key and the organization it belongs to' })

export const KeyInfo = Type.Object({
  organization_id: Type.String({ format: 'uuid' }),
  organization_name: Type.String(),
  tier: Tier,
  key_prefix: keyPrefix,
  rate_limit_per_minute: Type.Union([Type.Integer(), Type.Null()], { description: 'null means unlimited' }),
  created_at: timestamp
}, { $id: 'KeyInfo' })

/** A week: long enough to roll a key out to every worker, short enough that a leaked old key does not linger. */
export const MAX_KEY_GRACE_SECONDS = 7 * 24 * 3600

export const RotateKeyBody = Type.Object({
  expires_in_seconds: Type.Integer({
    minimum: 0,
    maximum: MAX_KEY_GRACE_SECONDS,
    default: 0,
    description: 'How long the old key keeps working (0: it stops now; at most 7 days). Rotating again ends any earlier grace period.'
  })
}, { $id: 'RotateKeyBody', additionalProperties: false })

export const RotatedKey = Type.Object({
  api_key: apiKey,
  key_prefix: keyPrefix,
  previous_key_expires_at: Type.Union([timestamp, Type.Null()], { description: 'When the old key stops working; null: it already has' })
}, { $id: 'RotatedKey' })
