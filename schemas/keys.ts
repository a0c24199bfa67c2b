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

/** A week: long enough to roll a key out to every worker, short enough that a leaked old key does not linger. */
export const MAX_KEY_GRACE_SECONDS = 7 * 24 * 3600

// Inline in the OpenAPI document (not a named schema): it has a default (see LeaseBody in leases.ts).
export const RotateKeyBody = Type.Object({
  expires_in_seconds: Type.Integer({
    minimum: 0,
    maximum: MAX_KEY_GRACE_SECONDS,
    default: 0,
    description: 'How long the old key keeps working (0: it stops now; at most 7 days). Rotating again ends any earlier grace period.'
  })
}, { additionalProperties: false })

export const RotatedKey = Type.Object({
  api_key: apiKey,
  key_prefix: keyPrefix,
  previous_key_expires_at: Type.Union([Timestamp, Type.Null()], { description: 'When the old key stops working; null: it already has' })
}, { $id: 'RotatedKey' })
