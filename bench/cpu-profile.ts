import { readdir, readFile } from 'node:fs/promises'
import path from 'node:path'

interface ProfileNode {
  id: number
  callFrame: { functionName: string, url: string, lineNumber: number }
}

interface CpuProfile {
  nodes: ProfileNode[]
  samples: number[]
  timeDeltas: number[]
}

function frameName ({ callFrame }: ProfileNode): string {
  const file = callFrame.url === '' ? '' : ` ${callFrame.url.replace(/^.*node_modules\//, '').replace(/^file:\/\/.*\/dist\//, 'dist/')}:${callFrame.lineNumber + 1}`
  return `${callFrame.functionName || '(anonymous)'}${file}`
}

/** The frames with the most self time in the newest .cpuprofile of `dir`, as markdown table rows. */
export async function topFrames (dir: string, count = 15): Promise<string[]> {
  const files = (await readdir(dir)).filter((name) => name.endsWith('.cpuprofile')).sort()
  const newest = files.at(-1)
  if (newest === undefined) return [`(no .cpuprofile in ${dir})`]
  const profile = JSON.parse(await readFile(path.join(dir, newest), 'utf8')) as CpuProfile
  const nodes = new Map(profile.nodes.map((node) => [node.id, node]))
  const selfMicros = new Map<string, number>()
  profile.samples.forEach((nodeId, index) => {
    const node = nodes.get(nodeId)
    if (!node) return
    const name = frameName(node)
    selfMicros.set(name, (selfMicros.get(name) ?? 0) + (profile.timeDeltas[index] ?? 0))
  })
  const total = [...selfMicros.values()].reduce((sum, micros) => sum + micros, 0)
  const top = [...selfMicros.entries()].sort((a, b) => b[1] - a[1]).slice(0, count)
  return [
    `${path.join(dir, newest)}, ${(total / 1e6).toFixed(1)} s of samples`,
    '',
    '| ms | % | frame |',
    '| --- | --- | --- |',
    ...top.map(([name, micros]) => `| ${(micros / 1000).toFixed(0)} | ${(100 * micros / total).toFixed(1)} | \`${name}\` |`)
  ]
}
