import t from 'tap'
import { loadConfig, processPoolMax } from '../../lib/config.js'

t.test('defaults are documented values', async (t) => {
  const config = loadConfig({})
  t.match(config, {
    PORT: 3000,
    HOST: '127.0.0.1',
    LOG_LEVEL: 'info',
    RATE_LIMIT_FREE: 100,
    RATE_LIMIT_STARTER: 1000,
    RATE_LIMIT_PROFESSIONAL: 5000,
    RATE_LIMIT_ENTERPRISE: 10000,
    RATE_LIMIT_ANONYMOUS: 1000,
    REQUEST_TIMEOUT_MS: 30000,
    REQUEST_HEADERS_TIMEOUT_MS: 10000,
    OVERLOAD_MAX_EVENT_LOOP_DELAY_MS: 50,
    OVERLOAD_MAX_HEAP_USED_MB: 0,
    OVERLOAD_MAX_RSS_MB: 0,
    OVERLOAD_MAX_IN_FLIGHT: 100,
    OVERLOAD_SAMPLE_INTERVAL_MS: 100,
    OVERLOAD_RETRY_AFTER_SECONDS: 1,
    INGEST_QUEUE_MAX_WAIT_MS: 50
  })
  t.equal(config.DATABASE_URL, undefined)
})

t.test('an invalid value stops start-up with a message naming the setting', async (t) => {
  const cases: Array<[Record<string, string>, RegExp]> = [
    [{ PORT: 'abc' }, /PORT/],
    [{ PORT: '70000' }, /PORT/],
    [{ LOG_LEVEL: 'loud' }, /LOG_LEVEL/],
    [{ RATE_LIMIT_FREE: '-1' }, /RATE_LIMIT_FREE/],
    [{ DATABASE_URL: 'mysql://x' }, /DATABASE_URL/],
    [{ REDIS_URL: 'localhost:6379' }, /REDIS_URL/],
    [{ ADMIN_TOKEN: 'short' }, /ADMIN_TOKEN/],
    [{ REQUEST_TIMEOUT_MS: '50' }, /REQUEST_TIMEOUT_MS/],
    [{ OVERLOAD_SAMPLE_INTERVAL_MS: '5' }, /OVERLOAD_SAMPLE_INTERVAL_MS/],
    [{ OVERLOAD_RETRY_AFTER_SECONDS: '0' }, /OVERLOAD_RETRY_AFTER_SECONDS/],
    [{ INGEST_GROUP_WAIT_MS: '50', INGEST_QUEUE_MAX_WAIT_MS: '50' }, /INGEST_QUEUE_MAX_WAIT_MS \(50\) must exceed INGEST_GROUP_WAIT_MS/],
    [{ REQUEST_TIMEOUT_MS: '5000', REQUEST_HEADERS_TIMEOUT_MS: '10000' }, /REQUEST_HEADERS_TIMEOUT_MS \(10000\) cannot exceed REQUEST_TIMEOUT_MS/]
  ]
  for (const [env, pattern] of cases) {
    t.throws(() => loadConfig(env), { message: pattern }, JSON.stringify(env))
  }
})

t.test('DATABASE_POOL_MAX is split between WEB_CONCURRENCY processes, each getting at least one connection', async (t) => {
  t.equal(processPoolMax(loadConfig({})), 20, 'one process: the whole pool')
  t.equal(processPoolMax(loadConfig({ WEB_CONCURRENCY: '3', DATABASE_POOL_MAX: '20' })), 6, 'three processes: 6 each, 18 in all')
  t.throws(() => loadConfig({ WEB_CONCURRENCY: '4', DATABASE_POOL_MAX: '3' }), { message: /DATABASE_POOL_MAX \(3\).*WEB_CONCURRENCY \(4\)/ })
  t.throws(() => loadConfig({ DATABASE_DIRECT_URL: 'mysql://x' }), { message: /DATABASE_DIRECT_URL/ })
  t.throws(() => loadConfig({ DATABASE_DIRECT_URL: 'postgres://db/x' }), { message: /DATABASE_DIRECT_URL.*set DATABASE_URL too/ }, 'not without a DATABASE_URL')
  t.throws(() => loadConfig({ WEB_CONCURRENCY: '0' }), { message: /WEB_CONCURRENCY/ })
})
