import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto'

/**
 * Webhook signing secrets at rest. With keys configured (WEBHOOK_SECRET_KEYS), secrets are stored as
 * `enc:v1:<key id>:<base64 of IV | GCM tag | ciphertext>`, AES-256-GCM under the first key; every listed key
 * decrypts, so a key can be replaced without a flag day (new key first, old key after it until nothing uses it).
 * Values without the prefix are plain secrets: rows written before encryption was turned on keep working and
 * are re-encrypted by the start-up sweep.
 */
export interface SecretBox {
  /** What to store for a secret: encrypted under the first key, or the secret itself when no key is configured. */
  seal: (secret: string) => string
  /** The secret from what is stored; throws when it was encrypted with a key that is not configured. */
  open: (stored: string) => string
  /** Whether a stored value is already as `seal` would write it now (nothing to re-encrypt). */
  isCurrent: (stored: string) => boolean
  /** The `enc:v1:<id>:` prefix of values sealed now; undefined when secrets are stored in plain text. */
  readonly currentPrefix: string | undefined
}

interface SecretKey {
  id: string
  key: Buffer
}

const PREFIX = 'enc:v1:'
const IV_BYTES = 12
const TAG_BYTES = 16
const KEY_BYTES = 32
const KEY_ENTRY = /^([A-Za-z0-9_-]{1,32}):([A-Za-z0-9+/]+={0,2})$/

/** Parses `id:base64,id:base64,...`; throws a message naming WEBHOOK_SECRET_KEYS when an entry is malformed. */
export function parseSecretKeys (setting: string | undefined): SecretKey[] {
  if (setting === undefined || setting.trim() === '') return []
  const keys = setting.split(',').map((entry, index) => {
    const match = KEY_ENTRY.exec(entry.trim())
    const key = match?.[2] === undefined ? undefined : Buffer.from(match[2], 'base64')
    if (match?.[1] === undefined || key?.length !== KEY_BYTES) {
      throw new Error(`env/WEBHOOK_SECRET_KEYS entry ${index + 1} must be <id>:<base64 of ${KEY_BYTES} random bytes> (id: letters, digits, _ or -)`)
    }
    return { id: match[1], key }
  })
  const ids = keys.map((entry) => entry.id)
  const repeated = ids.find((id, index) => ids.indexOf(id) !== index)
  if (repeated !== undefined) throw new Error(`env/WEBHOOK_SECRET_KEYS lists the key id "${repeated}" twice`)
  return keys
}

export function createSecretBox (setting: string | undefined): SecretBox {
  const keys = parseSecretKeys(setting)
  const byId = new Map(keys.map((entry) => [entry.id, entry.key]))
  const current = keys[0]
  const currentPrefix = current === undefined ? undefined : `${PREFIX}${current.id}:`

  const seal = (secret: string): string => {
    if (current === undefined) return secret
    const iv = randomBytes(IV_BYTES)
    const cipher = createCipheriv('aes-256-gcm', current.key, iv)
    const encrypted = Buffer.concat([cipher.update(secret, 'utf8'), cipher.final()])
    return `${currentPrefix}${Buffer.concat([iv, cipher.getAuthTag(), encrypted]).toString('base64')}`
  }

  const open = (stored: string): string => {
    if (!stored.startsWith(PREFIX)) return stored
    const [id = '', data = ''] = stored.slice(PREFIX.length).split(':')
    const key = byId.get(id)
    if (key === undefined) throw new Error(`a webhook secret is encrypted with key "${id}", which is not in WEBHOOK_SECRET_KEYS`)
    const bytes = Buffer.from(data, 'base64')
    const decipher = createDecipheriv('aes-256-gcm', key, bytes.subarray(0, IV_BYTES))
    decipher.setAuthTag(bytes.subarray(IV_BYTES, IV_BYTES + TAG_BYTES))
    return Buffer.concat([decipher.update(bytes.subarray(IV_BYTES + TAG_BYTES)), decipher.final()]).toString('utf8')
  }

  const isCurrent = (stored: string): boolean =>
    currentPrefix === undefined ? true : stored.startsWith(currentPrefix)

  return { seal, open, isCurrent, currentPrefix }
}
