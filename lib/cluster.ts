import cluster, { type Worker } from 'node:cluster'
import { once } from 'node:events'

export interface ClusterLog {
  info: (details: object, message: string) => void
  error: (details: object, message: string) => void
}

export interface ClusterOptions {
  /** Child processes to keep running, each in a slot of its own (0 … processes − 1). */
  processes: number
  /** Environment of the child in `slot`, on top of the primary's (a restarted child gets its slot's again). */
  env: (slot: number) => Record<string, string>
  log: ClusterLog
  /** First delay before a crashed child is replaced; doubles for each crash in a row, up to maxRestartDelayMs. */
  restartDelayMs?: number
  maxRestartDelayMs?: number
  /** A child that ran this long before it died is replaced after restartDelayMs again (the streak is over). */
  stableAfterMs?: number
  /** How long stop() waits for the children's own graceful shutdown before it kills them. */
  stopTimeoutMs: number
}

export interface Cluster {
  /** Resolves once every slot's first child listens; rejects if a child exits before that (a start-up failure). */
  ready: Promise<void>
  /** SIGTERM to every child (each closes gracefully), resolved when all have exited; no restarts from then on. */
  stop: () => Promise<void>
}

interface Slot {
  worker?: Worker
  startedAt: number
  crashes: number
  restartTimer?: NodeJS.Timeout
}

/**
 * Runs `processes` children of this script with node:cluster, sharing one listening port (the primary
 * accepts connections and hands them out round-robin). A child that dies is replaced, after a delay that
 * doubles while it keeps dying young, so a crash loop does not spin; a child dying before all have started is
 * a start-up failure instead (a bad port or database would fail every restart the same way).
 */
export function startCluster (options: ClusterOptions): Cluster {
  const restartDelayMs = options.restartDelayMs ?? 500
  const maxRestartDelayMs = options.maxRestartDelayMs ?? 30_000
  const stableAfterMs = options.stableAfterMs ?? 30_000
  const slots: Slot[] = Array.from({ length: options.processes }, () => ({ startedAt: 0, crashes: 0 }))
  let stopping = false
  let started = false
  let listening = 0
  let resolveReady: () => void = () => {}
  let rejectReady: (error: Error) => void = () => {}
  const ready = new Promise<void>((resolve, reject) => { resolveReady = resolve; rejectReady = reject })

  const fork = (slotIndex: number) => {
    const slot = slots[slotIndex] as Slot
    const worker = cluster.fork(options.env(slotIndex))
    slot.worker = worker
    slot.startedAt = Date.now()
    worker.once('listening', () => {
      options.log.info({ slot: slotIndex, child_pid: worker.process.pid }, 'API process listening')
      if (!started && ++listening === options.processes) {
        started = true
        resolveReady()
      }
    })
    worker.once('exit', (code, signal) => onExit(slotIndex, worker, code, signal))
  }

  const onExit = (slotIndex: number, worker: Worker, code: number | null, signal: string | null) => {
    const slot = slots[slotIndex] as Slot
    if (slot.worker === worker) slot.worker = undefined
    if (stopping) return
    const details = { slot: slotIndex, child_pid: worker.process.pid, code, signal }
    if (!started) {
      options.log.error(details, 'API process exited during start-up')
      rejectReady(new Error(`API process in slot ${slotIndex} exited during start-up (${signal ?? `code ${String(code)}`})`))
      return
    }
    if (Date.now() - slot.startedAt >= stableAfterMs) slot.crashes = 0
    const delay = Math.min(restartDelayMs * 2 ** slot.crashes, maxRestartDelayMs)
    slot.crashes++
    options.log.error({ ...details, restart_in_ms: delay }, 'API process exited; replacing it')
    slot.restartTimer = setTimeout(() => {
      slot.restartTimer = undefined
      if (!stopping) fork(slotIndex)
    }, delay)
  }

  for (let index = 0; index < options.processes; index++) fork(index)

  return {
    ready,
    async stop () {
      stopping = true
      const alive = slots.flatMap((slot) => {
        clearTimeout(slot.restartTimer)
        const worker = slot.worker
        return worker === undefined || worker.isDead() ? [] : [worker]
      })
      await Promise.all(alive.map(async (worker) => {
        const exited = once(worker, 'exit')
        worker.process.kill('SIGTERM')
        const killer = setTimeout(() => worker.process.kill('SIGKILL'), options.stopTimeoutMs)
        try {
          await exited
        } finally {
          clearTimeout(killer)
        }
      }))
    }
  }
}
