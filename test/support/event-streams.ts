import type { FastifyInstance } from 'fastify'

/** Starts the app on a free loopback port; its base URL. */
export async function listen (app: FastifyInstance): Promise<string> {
  await app.listen({ port: 0, host: '127.0.0.1' })
  const address = app.server.address()
  if (address === null || typeof address === 'string') throw new Error('no port')
  return `http://127.0.0.1:${address.port}`
}

export interface Frame { id?: string, retry?: string, data?: string }

/** An open SSE connection: its frames as they come, parsed. */
export async function openStream (url: string, headers: Record<string, string>) {
  const controller = new AbortController()
  const response = await fetch(url, { headers, signal: controller.signal })
  const reader = response.body?.getReader()
  if (!reader) throw new Error('no body')
  const decoder = new TextDecoder()
  let buffer = ''
  const frames: Frame[] = []
  /** Reads until `count` frames with data came (false if the stream ended first). */
  const dataFrames = async (count: number): Promise<Frame[] | false> => {
    for (;;) {
      const withData = frames.filter((frame) => frame.data !== undefined)
      if (withData.length >= count) return withData
      const { value, done } = await reader.read()
      if (done) return false
      buffer += decoder.decode(value, { stream: true })
      let end: number
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end)
        buffer = buffer.slice(end + 2)
        const frame: Frame = {}
        for (const line of block.split('\n')) {
          const match = /^(id|retry|data): (.*)$/.exec(line)
          if (match?.[1] !== undefined) frame[match[1] as keyof Frame] = match[2]
        }
        if (Object.keys(frame).length > 0) frames.push(frame)
      }
    }
  }
  return { response, frames, dataFrames, close: () => controller.abort() }
}

/** `promise`, or a failure naming `what` once `limitMs` passed: a wait that cannot hang the whole file when what it waits for never comes. */
export async function within<T> (promise: Promise<T>, what: string, limitMs = 60_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const gaveUp = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => { reject(new Error(`gave up waiting for ${what}`)) }, limitMs)
  })
  try {
    return await Promise.race([promise, gaveUp])
  } finally {
    clearTimeout(timer)
  }
}
