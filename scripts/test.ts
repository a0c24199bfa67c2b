import { spawn } from 'node:child_process'
import { readdir, readFile, rm } from 'node:fs/promises'
import path from 'node:path'
import pino from 'pino'
import { openDatabase } from '../db/embedded-postgres.js'

/**
 * `npm test`: runs the tap suite against DATABASE_URL, or against an embedded PostgreSQL of its own
 * (.data/postgres-test, port 54330, so it never touches the development server's data), then prints a
 * one-line summary.
 */
const RESULTS_DIR = '.tap/test-results'
const log = pino({ name: 'test' })

const database = await openDatabase({
  DATABASE_URL: process.env.DATABASE_URL || undefined,
  EMBEDDED_POSTGRES_DIR: process.env.TEST_EMBEDDED_POSTGRES_DIR ?? '.data/postgres-test',
  EMBEDDED_POSTGRES_PORT: Number(process.env.TEST_EMBEDDED_POSTGRES_PORT ?? 54330)
}, log)

let exitCode = 1
try {
  await rm(RESULTS_DIR, { recursive: true, force: true })
  exitCode = await new Promise<number>((resolve, reject) => {
    const tap = spawn(path.resolve('node_modules/.bin/tap'), process.argv.slice(2), {
      stdio: 'inherit',
      env: { ...process.env, DATABASE_URL: database.url }
    })
    tap.once('error', reject)
    tap.once('exit', (code, signal) => resolve(code ?? (signal ? 1 : 0)))
  })
  const { passed, failed, skipped } = await countResults()
  console.log(`tests: ${passed} passed, ${failed} failed, ${skipped} skipped`)
  if (failed > 0 && exitCode === 0) exitCode = 1
} finally {
  await database.stop()
}
process.exit(exitCode)

/** Counts the top-level test points of every file tap saved, for the one-line summary. */
async function countResults (): Promise<{ passed: number, failed: number, skipped: number }> {
  const totals = { passed: 0, failed: 0, skipped: 0 }
  const files = await readdir(RESULTS_DIR, { recursive: true }).catch(() => [])
  for (const file of files.filter((name) => name.endsWith('.tap'))) {
    for (const line of (await readFile(path.join(RESULTS_DIR, file), 'utf8')).split('\n')) {
      const match = /^(not ok|ok) \d+ .*?(# (SKIP|TODO))?/i.exec(line)
      if (!match) continue
      if (match[2]) totals.skipped++
      else if (match[1] === 'ok') totals.passed++
      else totals.failed++
    }
  }
  return totals
}
