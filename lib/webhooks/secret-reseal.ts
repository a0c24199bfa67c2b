import type { Queryable } from '../../db/queryable.js'
import { listSecretsNotSealedWith, replaceStoredSecrets, type StoredSecrets } from '../../db/webhooks.js'
import type { SecretBox } from './secret-box.js'

const RESEAL_BATCH = 500

/** The row's secrets decrypted, or undefined when one was encrypted with a key that is not configured. */
function openAll (box: SecretBox, row: StoredSecrets): StoredSecrets | undefined {
  try {
    return { id: row.id, secret: box.open(row.secret), previous_secret: row.previous_secret === null ? null : box.open(row.previous_secret) }
  } catch {
    return undefined
  }
}

/** Re-encrypts every secret not sealed with the current key; returns how many rows changed and how many could not be read. */
export async function resealWebhookSecrets (db: Queryable, box: SecretBox): Promise<{ resealed: number, unreadable: number }> {
  const totals = { resealed: 0, unreadable: 0 }
  if (box.currentPrefix === undefined) return totals
  let afterId: string | null = null
  for (;;) {
    const rows: StoredSecrets[] = await listSecretsNotSealedWith(db, box.currentPrefix, afterId, RESEAL_BATCH)
    const before: StoredSecrets[] = []
    const after: StoredSecrets[] = []
    for (const row of rows) {
      const plain = openAll(box, row)
      if (plain === undefined) {
        totals.unreadable++
        continue
      }
      before.push(row)
      after.push({ id: row.id, secret: box.seal(plain.secret), previous_secret: plain.previous_secret === null ? null : box.seal(plain.previous_secret) })
    }
    if (after.length > 0) totals.resealed += await replaceStoredSecrets(db, before, after)
    if (rows.length < RESEAL_BATCH) return totals
    afterId = rows.at(-1)?.id ?? null
  }
}
