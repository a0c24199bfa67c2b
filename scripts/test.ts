import { spawn } from 'node:child_process'
import { mkdir, readFile, rm } from 'node:fs/promises'
import path from 'node:path'
import pino from 'pino'
import { openDatabase } from '../db/embedded-postgres.js'
import { summarizeTap, summaryLine, type TapSummary } from './test-summary.js'

/**
 * `npm test`: runs the tap suite against DATABASE_URL, or against an embedded PostgreSQL of its own
 * (.data/postgres-test, port 54330, so it never touches the development server's data), then prints a
 * one-line summary of tap's own counts as the last line. tap's exit code is the script's: the summary
 * only reports.
 */
const SUMMARY_TAP = '.tap/test-summary.tap'
const log = pino({ name: 'test' })

const args = process.argv.slice(2)
// The reporter is always chosen here, as tap would by default (`base` on a terminal, raw TAP otherwise),
// so that how the root TAP stream is captured below cannot disagree with what tap does.
const reporter = reporterIn(args) ?? (process.stdout.isTTY ? 'base' : 'tap')
// With raw TAP, stdout is the root stream itself. tap's --output-file cannot be used then: with the `tap`
// reporter tap 21 pipes that stream to stdout twice. With any other reporter stdout is not TAP, and
// --output-file writes the root stream alongside it.
const rawTap = reporter === 'tap' || process.env.TAP === '1'
const tapArgs = [
  ...(reporterIn(args) === undefined ? [`--reporter=${reporter}`] : []),
  ...(rawTap ? [] : [`--output-file=${SUMMARY_TAP}`]),
  ...args
]

const database = await openDatabase({
  DATABASE_URL: process.env.DATABASE_URL || undefined,
  EMBEDDED_POSTGRES_DIR: process.env.TEST_EMBEDDED_POSTGRES_DIR ?? '.data/postgres-test',
  EMBEDDED_POSTGRES_PORT: Number(process.env.TEST_EMBEDDED_POSTGRES_PORT ?? 54330)
}, log)

let exitCode = 1
let summary: TapSummary | undefined
try {
  await rm(SUMMARY_TAP, { force: true })
  await mkdir(path.dirname(SUMMARY_TAP), { recursive: true })
  const stdoutChunks: Buffer[] = []
  exitCode = await new Promise<number>((resolve, reject) => {
    const tap = spawn(path.resolve('node_modules/.bin/tap'), tapArgs, {
      stdio: ['inherit', rawTap ? 'pipe' : 'inherit', 'inherit'],
      env: { ...process.env, DATABASE_URL: database.url }
    })
    tap.stdout?.on('data', (chunk: Buffer) => {
      process.stdout.write(chunk)
      stdoutChunks.push(chunk)
    })
    tap.once('error', reject)
    tap.once('close', (code, signal) => resolve(code ?? (signal ? 1 : 0)))
  })
  const rootTap = rawTap
    ? Buffer.concat(stdoutChunks).toString('utf8')
    : await readFile(SUMMARY_TAP, 'utf8').catch(() => '')
  summary = summarizeTap(rootTap)
} finally {
  await database.stop()
}

// Last, after everything that might log, because CI reads the final `N passed, N failed` line.
if (summary.reported === null) {
  console.error('tap printed no counts of its own (stopped before the end?): the summary counts what it wrote until then')
} else if (summaryLine(summary.reported) !== summaryLine(summary.counted)) {
  console.error(`tap's own counts ${JSON.stringify(summary.reported)} differ from the parsed stream's ${JSON.stringify(summary.counted)}; showing tap's`)
}
const counts = summary.reported ?? summary.counted
if ((counts.fail > 0) !== (exitCode !== 0)) {
  console.error(`tap exited with code ${exitCode} and counted ${counts.fail} failures: its exit code stands`)
}
console.log(summaryLine(counts))
process.exit(exitCode)

/** The reporter named on tap's command line (-R x, -Rx, --reporter x, --reporter=x), before any `--`. */
function reporterIn (argv: string[]): string | undefined {
  let found: string | undefined
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? ''
    if (arg === '--') break
    if (arg === '-R' || arg === '--reporter') found = argv[++i]
    else if (arg.startsWith('--reporter=')) found = arg.slice('--reporter='.length)
    else if (arg.startsWith('-R')) found = arg.slice(2)
  }
  return found
}
