import { Parser, type Result } from 'tap-parser'

/** What tap counts for a run: every assertion at any depth, each in exactly one bucket. */
export interface TapCounts {
  total: number
  pass: number
  fail: number
  skip: number
  todo: number
}

export interface TapSummary {
  /** Counted by tap-parser from the run's root TAP stream. */
  counted: TapCounts
  /**
   * tap's own counts: the `# { total: …, pass: … }` comment its root prints as it completes (also after a
   * bail-out); null when the stream stopped before that (tap killed), so `counted` is then only what came first.
   */
  reported: TapCounts | null
}

/**
 * Counts a run's root TAP stream (`tap --output-file`, or stdout with `--reporter=tap`) the way tap's runner
 * does: its root parser's `result` events, which surface every assertion of every file and subtest but drop a
 * subtest's own summary point when it merely repeats its children (the tap runner counts the same events in
 * @tapjs/core's Base#onParserResult, which also gives todo precedence over skip, and skip over fail). A
 * file's point that says more than its children (non-zero exit code, timeout, an empty subtest) is counted.
 */
export function summarizeTap (tap: string): TapSummary {
  const counted: TapCounts = { total: 0, pass: 0, fail: 0, skip: 0, todo: 0 }
  const parser = new Parser()
  parser.on('result', (result: Result) => {
    counted.total++
    counted[result.todo ? 'todo' : result.skip ? 'skip' : result.ok ? 'pass' : 'fail']++
  })
  parser.end(tap)
  return { counted, reported: reportedCounts(tap) }
}

/**
 * tap's own counts, from the comment its root prints as it completes (util.format of its Counts, zero fields
 * left out). Read line by line rather than from the parser: after a bail-out the parser ignores what follows.
 * Only an unindented comment is the root's: a test file's own output is indented under its subtest.
 */
export function reportedCounts (tap: string): TapCounts | null {
  let found: TapCounts | null = null
  for (const line of tap.split('\n')) {
    const match = /^# \{ (total: \d+(?:, \w+: \d+)*) \}$/.exec(line)
    if (!match?.[1]) continue
    const fields = new Map(match[1].split(', ').map((field) => {
      const [key = '', value = ''] = field.split(': ')
      return [key, Number(value)] as const
    }))
    found = {
      total: fields.get('total') ?? 0,
      pass: fields.get('pass') ?? 0,
      fail: fields.get('fail') ?? 0,
      skip: fields.get('skip') ?? 0,
      todo: fields.get('todo') ?? 0
    }
  }
  return found
}

/** The line CI reads: `tests: N passed, N failed, N skipped`, with `, N todo` only when there are any. */
export function summaryLine (counts: TapCounts): string {
  const todo = counts.todo > 0 ? `, ${counts.todo} todo` : ''
  return `tests: ${counts.pass} passed, ${counts.fail} failed, ${counts.skip} skipped${todo}`
}
