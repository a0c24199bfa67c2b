export interface Check {
  phase: string
  name: string
  ok: boolean
  detail: string
}

/** The suite's verdicts, printed as they are made so a long run shows its progress. */
export class Checks {
  readonly list: Check[] = []

  add (phase: string, name: string, ok: boolean, detail: string): boolean {
    this.list.push({ phase, name, ok, detail })
    console.log(`  ${ok ? 'PASS' : 'FAIL'} ${name}${detail === '' ? '' : ` — ${detail}`}`)
    return ok
  }

  get failed (): Check[] {
    return this.list.filter((check) => !check.ok)
  }
}

export function errorMessage (error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}

/** Seconds with one decimal, or a dash when nothing was measured. */
export function seconds (value: number | undefined, digits = 1): string {
  return value === undefined ? '—' : value.toFixed(digits)
}
