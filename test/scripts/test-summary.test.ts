import t from 'tap'
import { reportedCounts, summarizeTap, summaryLine } from '../../scripts/test-summary.js'

/*
 * Root TAP streams from real tap 21.8 runs (`tap -R tap`, and `--output-file` under the base reporter, which
 * writes the same stream) of small test files; YAML diagnostics are cut down, which changes no count. Each
 * ends with tap's own counts, and the base reporter's `Asserts:` line of the same run gave the same figures.
 */

// t.pass, a subtest holding a nested one, a skipped subtest, a skipped assert, `not ok … # TODO`,
// `ok … # TODO`, a todo subtest, an empty subtest. Asserts: 5 pass 0 fail 2 skip 3 todo.
const SKIP_TODO_SUBTESTS = `TAP version 14
1..1
# Subtest: test/a.test.ts
    ok 1 - plain pass
    # Subtest: subtest with asserts
        ok 1 - inner one
        ok 2 - inner two
        # Subtest: nested
            ok 1 - deep
            1..1
        ok 3 - nested # time=2.864ms

        1..3
    ok 2 - subtest with asserts # time=7.117ms

    ok 3 - skipped subtest # SKIP not here
    ok 4 - a skipped assert # SKIP reason
    not ok 5 - a todo failure # TODO later
    ok 6 - a todo pass # TODO later
    ok 7 - todo subtest # TODO
    # Subtest: empty subtest
        1..0
    ok 8 - empty subtest # time=0.462ms

    1..8
    # time=18.378ms
ok 1 - test/a.test.ts # time=18.378ms

# No coverage generated
# { total: 10, pass: 5, todo: 3, skip: 2 }
# time=3168.806ms
`

// A file that calls process.exit(3) inside a subtest: tap reports the unfinished subtest once (the
// subtest's and the file's own `not ok` only repeat it). Asserts: 2 pass 1 fail.
const CRASHED = `TAP version 14
1..1
# Subtest: test/c.test.ts
    ok 1 - before crash
    # Subtest: crashes
        ok 1 - ok inside
        not ok 2 - test unfinished
          ---
          test: crashes
          ...

        1..2
    not ok 2 - crashes # time=30.473ms

    1..2
    # time=42.743ms
not ok 1 - test/c.test.ts # time=42.743ms
  ---
  exitCode: 1
  signal: null
  ...

# No coverage generated
# { total: 3, pass: 2, fail: 1 }
# time=3060.847ms
`

// Every assert passed but the process exited with code 2: the file's own point is the failure.
const BAD_EXIT_CODE = `TAP version 14
1..1
# Subtest: test/g.test.ts
    ok 1 - all asserts pass
    1..1
    # time=63.333ms
not ok 1 - test/g.test.ts # time=63.333ms
  ---
  exitCode: 2
  signal: null
  ...

# No coverage generated
# { total: 2, pass: 1, fail: 1 }
# time=4172.249ms
`

// A subtest that never ends, with --timeout=3: the timeout inside and the runner's own for the file.
const TIMED_OUT = `TAP version 14
1..1
# Subtest: test/f.test.ts
    ok 1 - waits
    # Subtest: hangs
        not ok 1 - timeout!
          ---
          signal: SIGALRM
          expired: TAP
          ...

        1..1
    not ok 2 - hangs # time=20.667ms

    1..2
    # time=52.591ms
not ok 1 - timeout!
  ---
  expired: test/f.test.ts
  ...

# No coverage generated
# { total: 3, pass: 1, fail: 2 }
# time=3639.022ms
`

// --bail, two files: the first passes, the second's first failure bails the whole run out. tap still prints
// its counts after the bail-out, which the parser no longer reads. Asserts: 5 pass 1 fail 2 skip 3 todo.
const BAILED = `TAP version 14
1..2
${SKIP_TODO_SUBTESTS.split('\n').slice(2, 28).join('\n')}
# Subtest: test/b.test.ts
    # Subtest: fails
        not ok 1 - one is two
          ---
          compare: ===
          ...

        Bail out! one is two
Bail out! one is two
# No coverage generated
Bail out! one is two
# { total: 11, pass: 5, fail: 1, todo: 3, skip: 2 }
# time=6432.321ms
`

t.test('counts what tap counts: every assert at any depth, skips and todos apart, a not ok TODO not failed', async (t) => {
  const summary = summarizeTap(SKIP_TODO_SUBTESTS)
  t.same(summary.counted, { total: 10, pass: 5, fail: 0, skip: 2, todo: 3 })
  t.same(summary.reported, summary.counted)
  t.equal(summaryLine(summary.counted), 'tests: 5 passed, 0 failed, 2 skipped, 3 todo')
})

t.test('a crashed file counts its failure once', async (t) => {
  const summary = summarizeTap(CRASHED)
  t.same(summary.counted, { total: 3, pass: 2, fail: 1, skip: 0, todo: 0 })
  t.same(summary.reported, summary.counted)
  t.equal(summaryLine(summary.counted), 'tests: 2 passed, 1 failed, 0 skipped')
})

t.test('a file whose asserts all passed but whose process failed counts as a failure', async (t) => {
  const summary = summarizeTap(BAD_EXIT_CODE)
  t.same(summary.counted, { total: 2, pass: 1, fail: 1, skip: 0, todo: 0 })
  t.same(summary.reported, summary.counted)
})

t.test('a timed-out file counts the timeout inside and the runner\'s', async (t) => {
  const summary = summarizeTap(TIMED_OUT)
  t.same(summary.counted, { total: 3, pass: 1, fail: 2, skip: 0, todo: 0 })
  t.same(summary.reported, summary.counted)
})

t.test('a bailed-out run counts up to the bail-out, and tap\'s counts after it are still read', async (t) => {
  const summary = summarizeTap(BAILED)
  t.same(summary.counted, { total: 11, pass: 5, fail: 1, skip: 2, todo: 3 })
  t.same(summary.reported, summary.counted)
})

t.test('a stream cut off before tap printed its counts: no reported counts, only what was counted', async (t) => {
  const cut = CRASHED.slice(0, CRASHED.indexOf('    not ok 2 - crashes'))
  const summary = summarizeTap(cut)
  t.equal(summary.reported, null)
  t.equal(summary.counted.pass, 2)
  t.ok(summary.counted.fail >= 1, 'the unfinished subtest is still a failure')
  t.same(summarizeTap(''), { counted: { total: 0, pass: 0, fail: 0, skip: 0, todo: 0 }, reported: null })
})

t.test('only the root\'s unindented counts comment is tap\'s own', async (t) => {
  t.equal(reportedCounts('# Subtest: test/x.test.ts\n    # { total: 99, pass: 99 }\n'), null)
  t.same(reportedCounts('# { total: 4, pass: 1, fail: 3 }\n'), { total: 4, pass: 1, fail: 3, skip: 0, todo: 0 })
})

t.test('the summary line keeps the form CI reads', async (t) => {
  const line = summaryLine({ total: 3, pass: 3, fail: 0, skip: 0, todo: 0 })
  t.equal(line, 'tests: 3 passed, 0 failed, 0 skipped')
  t.match(summaryLine({ total: 9, pass: 1, fail: 2, skip: 3, todo: 3 }), /^tests: 1 passed, 2 failed, 3 skipped, 3 todo$/)
})
