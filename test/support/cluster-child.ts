import { createServer } from 'node:http'

// A cluster child for test/lib/cluster.test.ts: listens (so the primary sees it start), and on SIGTERM stops
// when CHILD_STOPS=yes, or ignores it (a child that will not stop).
const server = createServer((_request, response) => { response.end('ok') })
process.on('SIGTERM', () => {
  if (process.env.CHILD_STOPS === 'yes') server.close(() => process.exit(0))
})
server.listen(0, '127.0.0.1')
