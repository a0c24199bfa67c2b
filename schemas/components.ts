import type { TSchema } from 'typebox'
import { ErrorResponse } from './errors.js'
import {
  Acknowledged, BatchBody, BatchItemResult, BatchResult, BulkAckBody, BulkAckResult, Event, EventAccepted, EventDetail, EventInput, InboxPage
} from './events.js'
import { CacheStats, IngestStats, Liveness, NotReady, PoolStats, Pressure, Readiness } from './health.js'
import { ApiKey, GenerateKeyBody, KeyInfo, RotatedKey } from './keys.js'
import { ExtendResult, Lease, LeaseAckResult, LeaseEventsBody, LeasedEvent, ReleaseResult } from './leases.js'
import {
  DeadLetter, DeadLetterList, EventSubscriptionState, PendingCounts, RedriveBody, RedriveResult, Replay, ReplayBody, ReplayList, SeekBody, Subscription, SubscriptionList, UpdateSubscriptionBody
} from './subscriptions.js'
import {
  CreateWebhookBody, Delivery, DeliveryPage, RedeliverBody, RedeliverResult, UpdateWebhookBody, Webhook, WebhookList, WebhookTestResult
} from './webhooks.js'

/**
 * Every named schema (one with an `$id`), registered once with the app (for the serializers and the OpenAPI
 * document's components.schemas) and with the request validators; routes and other schemas use them through
 * ref(). A schema given an `$id` must be listed here, or its references resolve nowhere.
 */
export const NAMED_SCHEMAS: TSchema[] = [
  ErrorResponse,
  Liveness, PoolStats, Pressure, Readiness, NotReady, CacheStats, IngestStats,
  GenerateKeyBody, ApiKey, KeyInfo, RotatedKey,
  EventInput, EventAccepted, Event, EventSubscriptionState, EventDetail, BatchBody, BatchItemResult, BatchResult, Acknowledged, BulkAckBody, BulkAckResult, InboxPage,
  LeasedEvent, Lease, LeaseEventsBody, LeaseAckResult, ReleaseResult, ExtendResult,
  CreateWebhookBody, UpdateWebhookBody, Webhook, WebhookList, Delivery, DeliveryPage, RedeliverBody, RedeliverResult, WebhookTestResult,
  UpdateSubscriptionBody, PendingCounts, Subscription, SubscriptionList, SeekBody, DeadLetter, DeadLetterList, RedriveBody, RedriveResult, ReplayBody, Replay, ReplayList
]
