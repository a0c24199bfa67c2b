/** Counts what each key holds open (streams, waiting calls per organization) and refuses beyond `max`. */
export interface Slots {
  /** Takes a slot for `key`: the function that gives it back (safe to call more than once), or undefined when all are taken. */
  acquire: (key: string) => (() => void) | undefined
}

export function createSlots (max: number): Slots {
  const counts = new Map<string, number>()
  const held = (key: string) => counts.get(key) ?? 0
  const acquire = (key: string) => {
    if (held(key) >= max) return undefined
    counts.set(key, held(key) + 1)
    let released = false
    return () => {
      if (released) return
      released = true
      const left = held(key) - 1
      // Keys with nothing held are dropped, so the map stays as small as what is open right now.
      if (left > 0) counts.set(key, left)
      else counts.delete(key)
    }
  }
  return { acquire }
}
