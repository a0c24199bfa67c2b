import { once } from 'node:events'
import { createServer, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { errorBody } from './api-error.js'
import type { WorkerMetrics } from './metrics.js'
import { bearerTokenOf, tokenAccepted } from './tokens.js'

export interface MetricsServerOptions {
  host: string
  port: number
  /** When set, scrapes need `Authorization: Bearer <token>` (METRICS_TOKEN, as on the API). */
  token: string | undefined
  log: { warn: (details: object, message: string) => void }
}

export interface MetricsServer {
  /** The port listened on (the one asked for, or the one the system chose for 0). */
  port: number
  /** Stops listening and drops open connections (scrapers keep theirs alive), so the process can exit. */
  close: () => Promise<void>
}

function answerError (response: ServerResponse, statusCode: number, code: string, message: string): void {
  response.writeHead(statusCode, { 'content-type': 'application/json; charset=utf-8' }).end(JSON.stringify(errorBody(statusCode, code, message)))
}

/**
 * `GET /metrics` for a process without an HTTP API (the separate delivery worker): a bare node:http server,
 * since one route needs no framework. Answers errors in the API's error shape.
 */
export async function serveMetrics (metrics: WorkerMetrics, options: MetricsServerOptions): Promise<MetricsServer> {
  const server = createServer((request, response) => {
    const path = (request.url ?? '').split('?')[0]
    if (path !== '/metrics') return answerError(response, 404, 'not_found', `Route ${request.method ?? ''} ${path ?? ''} not found`)
    if (request.method !== 'GET' && request.method !== 'HEAD') {
      response.setHeader('allow', 'GET, HEAD')
      return answerError(response, 405, 'method_not_allowed', 'Only GET and HEAD are served here')
    }
    if (!tokenAccepted(options.token, bearerTokenOf(request.headers.authorization))) {
      return answerError(response, 401, 'invalid_metrics_token', 'This server requires Authorization: Bearer <METRICS_TOKEN> for its metrics')
    }
    metrics.scrape().then((text) => {
      response.writeHead(200, { 'content-type': metrics.contentType })
      response.end(request.method === 'HEAD' ? undefined : text)
    }, (error: unknown) => {
      options.log.warn({ err: error }, 'metrics scrape failed')
      answerError(response, 500, 'internal_error', 'Something went wrong on our side; it has been logged')
    })
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(options.port, options.host, () => {
      server.off('error', reject)
      resolve()
    })
  })
  return {
    port: (server.address() as AddressInfo).port,
    close: async () => {
      const closed = once(server, 'close')
      server.close()
      server.closeAllConnections()
      await closed
    }
  }
}
