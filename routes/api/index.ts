import type { FastifyInstance } from 'fastify'
import ackRoutes from './ack/index.js'
import eventAckRoutes from './events/ack.js'
import eventRoutes from './events/index.js'
import redeliverRoutes from './events/redeliver.js'
import { guardApi } from './hooks.js'
import inboxRoutes from './inbox/index.js'
import leaseRoutes from './inbox/leases.js'
import quarantineRoutes from './inbox/quarantine.js'
import streamRoutes from './inbox/stream.js'
import keyGenerateRoute from './keys/generate.js'
import keyRoutes from './keys/index.js'
import deadLetterRoutes from './subscriptions/dead-letters.js'
import subscriptionRoutes from './subscriptions/index.js'
import subscriptionLeaseRoutes from './subscriptions/leases.js'
import replayRoutes from './subscriptions/replays.js'
import subscriptionStreamRoutes from './subscriptions/stream.js'
import webhookRoutes from './webhooks/index.js'

/** Everything under /api (app.ts registers it with that prefix), behind the boundary of ./hooks.ts. */
export default async function apiRoutes (api: FastifyInstance): Promise<void> {
  guardApi(api)
  await api.register(keyGenerateRoute)
  await api.register(keyRoutes)
  await api.register(eventRoutes)
  await api.register(eventAckRoutes)
  await api.register(redeliverRoutes)
  await api.register(ackRoutes)
  await api.register(inboxRoutes)
  await api.register(leaseRoutes)
  await api.register(quarantineRoutes)
  await api.register(streamRoutes)
  await api.register(webhookRoutes)
  await api.register(subscriptionRoutes)
  await api.register(subscriptionLeaseRoutes)
  await api.register(deadLetterRoutes)
  await api.register(replayRoutes)
  await api.register(subscriptionStreamRoutes)
}
