export interface Percentiles {
  p50: number
  p99: number
  max: number
}

function percentile (sorted: number[], fraction: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * fraction))] ?? 0
}

/** p50, p99 and max of a list of durations (sorts a copy). */
export function percentiles (values: number[]): Percentiles {
  const sorted = [...values].sort((a, b) => a - b)
  return { p50: percentile(sorted, 0.5), p99: percentile(sorted, 0.99), max: sorted.at(-1) ?? 0 }
}
