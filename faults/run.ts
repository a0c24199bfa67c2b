import { mkdtemp } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { createOrganization, createWebhook } from './api.js'
import { Checks, errorMessage } from './checks.js'
import { startCluster } from './cluster.js'
import { abandonConsumers } from './consumer.js'
import { deleteOrganizations, serverVersion } from './database.js'
import { checkPhase, checkPoolNumbers, checkServerConnections, settleDeliveries, type PhaseRow } from './final.js'
import { runPhase, type Context, type FaultyEndpoint, type PhaseResult } from './phase.js'
import { PHASES } from './phases.js'
import { killAllNow, stopAll } from './processes.js'
import { Receiver } from './receivers.js'
import { renderReport, saveReport } from './report.js'
import { ensureServices } from './services.js'
import { SubscriptionReads } from './subscriptions.js'
import {
  CLAIM_SECONDS, CONNECTIONS, DATABASE_URL, HOOK_EVERY, POLL_INTERVAL_MS, POOL_MAX, REQUESTS_PER_SECOND, RETRY_SCHEDULE, RUN_ID, TYPES,
  WEBHOOK_TIMEOUT_MS
} from './settings.js'

/**
 * `npm run faults`: the production build (two API instances, one worker) on the machine's PostgreSQL and
 * Redis, under load, through one fault after another; prints a table, appends it to faults/results/<date>.md,
 * and exits 1 if any check failed. The last line is always `N passed, N failed`.
 */
const RESULTS_DIR = fileURLToPath(new URL('../../faults/results', import.meta.url))

const receivers: Receiver[] = []
const organizationIds: string[] = []
let cleanedUp: Promise<void> | undefined

/** Every exit path: processes first (nothing may write while the data goes), then receivers, services, data. */
async function cleanup (): Promise<void> {
  cleanedUp ??= (async () => {
    const step = async (what: string, work: () => Promise<void>) => {
      await work().catch((error: unknown) => console.error(`cleanup: ${what}: ${errorMessage(error)}`))
    }
    await step('stopping the subscription consumers', abandonConsumers)
    await step('stopping the services', stopAll)
    await step('closing the receivers', async () => { await Promise.all(receivers.map((receiver) => receiver.close())) })
    await step('restarting PostgreSQL and Redis', ensureServices)
    await step('deleting the organizations', () => deleteOrganizations(organizationIds))
  })()
  await cleanedUp
}

async function startReceivers (): Promise<{ healthy: Receiver, faulty: Receiver[] }> {
  const healthy = await Receiver.start('ok')
  receivers.push(healthy)
  const faulty = await Promise.all((['error500', 'hang', 'reset'] as const).map((behaviour) => Receiver.start(behaviour)))
  receivers.push(...faulty)
  return { healthy, faulty }
}

async function prepare (checks: Checks, logDir: string): Promise<Context> {
  const { healthy, faulty } = await startReceivers()
  const cluster = await startCluster(logDir)
  const baseUrl = cluster.apis[0]?.baseUrl ?? ''
  const organization = await createOrganization(baseUrl, 'load')
  organizationIds.push(organization.id)
  const pollOrganization = await createOrganization(baseUrl, 'long-poll')
  organizationIds.push(pollOrganization.id)
  await createWebhook(baseUrl, organization, healthy.url, ['faults.hook.*'])
  const faultyEndpoints: FaultyEndpoint[] = []
  for (const receiver of faulty) {
    faultyEndpoints.push({ receiver, webhookId: await createWebhook(baseUrl, organization, receiver.url, [TYPES.faulty]) })
  }
  return { cluster, organization, pollOrganization, healthy, faulty: faultyEndpoints, checks }
}

async function settings (): Promise<string> {
  return `${CONNECTIONS} connections paced to ${REQUESTS_PER_SECOND} requests/s in all, alternating between the instances, every ` +
    `${HOOK_EVERY}th event to the healthy webhook; worker: poll ${POLL_INTERVAL_MS / 1000} s, timeout ${WEBHOOK_TIMEOUT_MS} ms, ` +
    `retries ${RETRY_SCHEDULE.join(',')} s, claims ${CLAIM_SECONDS} s; pool max ${POOL_MAX}; PostgreSQL ${await serverVersion()} ` +
    `(${new URL(DATABASE_URL).pathname.slice(1)} on ${new URL(DATABASE_URL).host}), Redis restarted with nothing saved`
}

async function run (checks: Checks): Promise<string | undefined> {
  await ensureServices()
  const logDir = await mkdtemp(path.join(os.tmpdir(), `triggers-faults-${RUN_ID}-`))
  console.log(`fault suite ${RUN_ID}: service logs in ${logDir}`)
  const context = await prepare(checks, logDir)
  const subscriptions = await SubscriptionReads.start(context)
  const phases: PhaseResult[] = []
  for (const spec of PHASES) {
    const before = await subscriptions.progress()
    const phase = await runPhase(context, spec)
    subscriptions.notePhase(checks, spec, phase, before, await subscriptions.progress())
    phases.push(phase)
  }
  console.log('\n== final checks')
  await subscriptions.liftCaps()
  await settleDeliveries(context)
  // Before the connection checks: the consumers' calls would be busy connections.
  const subscriptionReport = await subscriptions.finish(checks, phases)
  const rows: PhaseRow[] = []
  for (const phase of phases) rows.push(await checkPhase(context, phase))
  await checkPoolNumbers(context)
  await checkServerConnections(context)
  return renderReport({ settings: await settings(), rows, phases, checks: checks.list, subscriptions: subscriptionReport, logDir })
}

async function main (): Promise<number> {
  const checks = new Checks()
  let report: string | undefined
  try {
    report = await run(checks)
  } catch (error) {
    checks.add('suite', 'the suite ran to the end', false, errorMessage(error))
  } finally {
    await cleanup()
  }
  if (report !== undefined) {
    console.log(`\n${report}`)
    console.log(`\nappended to ${await saveReport(report, RESULTS_DIR)}`)
  }
  const failed = checks.failed.length
  console.log(`${checks.list.length - failed} passed, ${failed} failed`)
  return failed === 0 ? 0 : 1
}

// No orphans: children die with the suite whatever ends it.
process.on('exit', killAllNow)
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    console.error(`\n${signal}: stopping the services and cleaning up`)
    void cleanup().finally(() => process.exit(130))
  })
}

process.exit(await main())
