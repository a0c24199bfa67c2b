/** Collects counts per key for a short while and hands them over in one batch. */
export interface CoalescedNotifier {
  add: (key: string, count: number) => void
  /** Sends what is pending now and waits for every send in flight (for shutdown). */
  flush: () => Promise<void>
}

/**
 * Each NOTIFY takes PostgreSQL's notification queue lock at commit and wakes every listening backend, so
 * under load one NOTIFY per commit costs more than the inserts around it. Announcements are therefore
 * gathered for `delayMs` and sent as one statement; listeners learn of new work at most that much later.
 * A failed send is reported, not thrown: listeners still find the work by polling or at their deadline.
 */
export function createCoalescedNotifier (send: (counts: Array<[key: string, count: number]>) => Promise<void>, delayMs: number, onError: (error: unknown) => void): CoalescedNotifier {
  let pending = new Map<string, number>()
  let timer: NodeJS.Timeout | undefined
  const inFlight = new Set<Promise<void>>()

  const sendPending = () => {
    clearTimeout(timer)
    timer = undefined
    if (pending.size === 0) return
    const counts = [...pending]
    pending = new Map()
    const sent = send(counts).catch(onError).finally(() => inFlight.delete(sent))
    inFlight.add(sent)
  }

  return {
    add (key, count) {
      pending.set(key, (pending.get(key) ?? 0) + count)
      timer ??= setTimeout(sendPending, delayMs)
    },
    async flush () {
      sendPending()
      await Promise.all(inFlight)
    }
  }
}
