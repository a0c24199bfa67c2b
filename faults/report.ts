import { existsSync } from 'node:fs'
import { appendFile, mkdir } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import type { Check } from './checks.js'
import type { PhaseRow } from './final.js'
import type { PhaseResult } from './phase.js'
import type { SubscriptionReport, SubscriptionRow } from './subscriptions.js'

export interface Report {
  settings: string
  rows: PhaseRow[]
  phases: PhaseResult[]
  checks: Check[]
  /** Undefined when the run ended before the subscriptions were judged. */
  subscriptions: SubscriptionReport | undefined
  logDir: string
}

const HEADER = [
  '| phase | sent | acknowledged | lost | 5xx (non-503) | 503 | other non-2xx | connection errors | ready again (s) | wake-up (s) | deliveries delivered / failed / stuck | duplicates |',
  '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |'
]

function row (phase: PhaseRow): string {
  const { delivered, failed, pending } = phase.deliveries
  return `| ${phase.name} | ${phase.sent} | ${phase.acknowledged} | ${phase.lost} | ${phase.other5xx} | ${phase.status503} | ${phase.otherStatus} | ` +
    `${phase.connectionErrors} | ${phase.recovery} | ${phase.wakeUp} | ${delivered} / ${failed} / ${pending} | ${phase.duplicates} |`
}

const SUBSCRIPTION_HEADER = [
  '| subscription | reads | acknowledged events to hand out | handed out | lost | duplicates | also handed out (answer to the load cut off) | leases / events acked | 503 | other non-2xx | connection errors |',
  '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |'
]

function subscriptionRow (row: SubscriptionRow): string {
  return `| ${row.name} | ${row.reads} | ${row.expected} | ${row.received} | ${row.lost} | ${row.duplicates} | ${row.beyond} | ${row.leasesAndAcks} | ` +
    `${row.status503} | ${row.otherErrors} | ${row.connectionErrors} |`
}

function renderSubscriptions (report: SubscriptionReport | undefined): string[] {
  if (report === undefined) return []
  return ['', ...SUBSCRIPTION_HEADER, ...report.rows.map(subscriptionRow), '', ...report.notes.map((note) => `- subscriptions: ${note}`)]
}

export function renderReport (report: Report): string {
  const failed = report.checks.filter((check) => !check.ok)
  const notes = report.phases.flatMap((phase) => phase.notes.map((note) => `- ${phase.name}: ${note}`))
  return [
    `Machine: ${os.cpus().length} × ${os.cpus()[0]?.model ?? 'unknown CPU'}, Node ${process.version}`,
    `Settings: ${report.settings}`,
    '',
    ...HEADER,
    ...report.rows.map(row),
    ...renderSubscriptions(report.subscriptions),
    '',
    ...notes,
    '',
    failed.length === 0 ? 'All checks passed.' : `Failed checks (${failed.length} of ${report.checks.length}):`,
    ...failed.map((check) => `- ${check.name}: ${check.detail.replace(/\n\s*/g, ' | ')}`),
    '',
    `Service logs: ${report.logDir}`
  ].join('\n')
}

/** Appends the run under a timestamp to <resultsDir>/<date>.md; returns the file's path. */
export async function saveReport (text: string, resultsDir: string): Promise<string> {
  const stamp = new Date().toISOString()
  const file = path.join(resultsDir, `${stamp.slice(0, 10)}.md`)
  await mkdir(resultsDir, { recursive: true })
  const heading = existsSync(file) ? '' : `# Fault injection runs, ${stamp.slice(0, 10)}\n`
  await appendFile(file, `${heading}\n## ${stamp.slice(0, 19).replace('T', ' ')} UTC\n\n${text}\n`)
  return file
}
