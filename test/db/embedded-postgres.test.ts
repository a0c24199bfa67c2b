import t from 'tap'
import { spawn } from 'node:child_process'
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { createServer, type AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import path from 'node:path'
import pg from 'pg'
import { openDatabase } from '../../db/embedded-postgres.js'
import { freePort } from '../support/free-port.js'
import type { Teardown } from '../support/helpers.js'

const quiet = { info: () => {}, warn: () => {} }

async function scratchDir (t: Teardown): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'triggers-embedded-'))
  // As root the server runs as the postgres user, which must be able to reach the data directory.
  await chmod(dir, 0o755)
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  return path.join(dir, 'pgdata')
}

t.test('a port taken by another program is reported with the setting to change', async (t) => {
  const blocker = createServer()
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise((resolve) => blocker.close(resolve)))
  const { port } = blocker.address() as AddressInfo
  await t.rejects(openDatabase({ EMBEDDED_POSTGRES_DIR: await scratchDir(t), EMBEDDED_POSTGRES_PORT: port }, quiet),
    { message: new RegExp(`Port ${port} .*in use.*EMBEDDED_POSTGRES_PORT`) })
})

t.test('a non-empty folder that is not a data directory is refused, not wiped', async (t) => {
  const dir = await scratchDir(t)
  const precious = path.join(dir, 'notes.txt')
  await mkdir(dir)
  await writeFile(precious, 'keep me')
  await t.rejects(openDatabase({ EMBEDDED_POSTGRES_DIR: dir, EMBEDDED_POSTGRES_PORT: await freePort() }, quiet),
    { message: /not a PostgreSQL data directory.*EMBEDDED_POSTGRES_DIR/ })
  t.equal(await readFile(precious, 'utf8'), 'keep me')
})

t.test('a server left running by a killed process is stopped and replaced', async (t) => {
  const dir = await scratchDir(t)
  const port = await freePort()
  const child = spawn(process.execPath, [...process.execArgv, path.resolve('test/support/start-embedded.ts'), dir, String(port)], {
    stdio: ['ignore', 'pipe', 'inherit']
  })
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (chunk: Buffer) => { if (chunk.toString().includes('ready')) resolve() })
    child.once('exit', (code) => reject(new Error(`fixture exited with ${code}`)))
  })
  await t.rejects(openDatabase({ EMBEDDED_POSTGRES_DIR: dir, EMBEDDED_POSTGRES_PORT: port }, quiet),
    { message: /in use by a running server/ }, 'a server whose node process lives is left alone')
  child.kill('SIGKILL')
  await new Promise((resolve) => child.once('exit', resolve))
  const leftoverPid = Number((await readFile(path.join(dir, 'postmaster.pid'), 'utf8')).split('\n')[0])
  t.doesNotThrow(() => process.kill(leftoverPid, 0), 'the killed process left its PostgreSQL running')

  const warnings: string[] = []
  const database = await openDatabase({ EMBEDDED_POSTGRES_DIR: dir, EMBEDDED_POSTGRES_PORT: port }, { info: () => {}, warn: (message) => warnings.push(message) })
  try {
    t.match(warnings.join('\n'), new RegExp(`still running \\(pid ${leftoverPid}\\)`))
    t.throws(() => process.kill(leftoverPid, 0), 'the leftover server was stopped')
    const client = new pg.Client({ connectionString: database.url })
    await client.connect()
    const { rows } = await client.query('SELECT 1 AS answer')
    await client.end()
    t.same(rows, [{ answer: 1 }], 'the new server answers')
  } finally {
    await database.stop()
  }
})
