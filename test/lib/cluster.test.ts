import t from 'tap'
import cluster, { type Worker } from 'node:cluster'
import { once } from 'node:events'
import path from 'node:path'
import { startCluster } from '../../lib/cluster.js'
import { waitFor } from '../support/webhooks.js'

// The children run test/support/cluster-child.ts (with this process's TypeScript loader).
cluster.setupPrimary({ exec: path.resolve('test/support/cluster-child.ts') })
t.teardown(() => { for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill('SIGKILL') })

const log = { info: () => {}, error: () => {} }

/** Starts one child and resolves once it listens, with what its exit will be. */
async function oneChild (stops: boolean, stopTimeoutMs: number) {
  const running = startCluster({ processes: 1, env: () => ({ CHILD_STOPS: stops ? 'yes' : 'no' }), log, stopTimeoutMs })
  await running.ready
  const [child] = Object.values(cluster.workers ?? {}).filter((worker): worker is Worker => worker !== undefined)
  if (!child) throw new Error('no child')
  const exit = once(child, 'exit') as Promise<[number | null, string | null]>
  return { running, child, exit }
}

t.test('stop() ends a child that will not stop on SIGTERM with SIGKILL after stopTimeoutMs', async (t) => {
  const { running, exit } = await oneChild(false, 300)
  let stopped = false
  const stopping = running.stop().then(() => { stopped = true })
  await waitFor('stop() to end the child', () => stopped)
  await stopping
  t.same(await exit, [null, 'SIGKILL'], 'killed: it ignored SIGTERM')
})

t.test('a child that stops on SIGTERM is not killed', async (t) => {
  const { running, exit } = await oneChild(true, 60_000)
  let stopped = false
  const stopping = running.stop().then(() => { stopped = true })
  await waitFor('stop() to end the child', () => stopped)
  await stopping
  t.same(await exit, [0, null], 'it exited by itself (code 0), not killed')
})
