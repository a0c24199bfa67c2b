-- Up Migration

-- Pull subscriptions: independent consumers over an organization's events, each in cursor order (txid, seq), as
-- NATS JetStream's consumers are over a stream. A subscription's state is its ack floor (every event at or before
-- it is done), its frontier (no event after it has been handed out) and, in subscription_events, one narrow row
-- per event between the two that is not simply done: leased, available again, acked ahead of the floor, or
-- dead-lettered. Events are never written by a subscription, so any number of them read the same log.
CREATE TABLE subscriptions (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
  kind text NOT NULL CHECK (kind IN ('pull')),
  name text,
  event_types text[] NOT NULL DEFAULT '{}',
  max_in_flight integer NOT NULL CHECK (max_in_flight > 0),
  max_attempts integer NOT NULL CHECK (max_attempts > 0),
  paused boolean NOT NULL DEFAULT false,
  floor_txid xid8 NOT NULL,
  floor_seq bigint NOT NULL,
  frontier_txid xid8 NOT NULL,
  frontier_seq bigint NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  CHECK ((floor_txid, floor_seq) <= (frontier_txid, frontier_seq))
);
CREATE INDEX subscriptions_organization ON subscriptions (organization_id, created_at);

-- Not partitioned: only the pending set lives here (rows the floor passes are deleted), and retention deletes the
-- rows of expired days in the transaction that drops their events' partitions.
CREATE TABLE subscription_events (
  subscription_id uuid NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
  txid xid8 NOT NULL,
  seq bigint NOT NULL,
  event_id uuid NOT NULL,
  event_created_at timestamptz NOT NULL,
  type text NOT NULL,
  state text NOT NULL CHECK (state IN ('pending', 'acked', 'dead')),
  lease_id uuid,
  leased_until timestamptz,
  -- Leases so far; at max_attempts without an ack the event is dead-lettered.
  attempts integer NOT NULL DEFAULT 0,
  dead_at timestamptz,
  PRIMARY KEY (subscription_id, txid, seq)
) WITH (fillfactor = 70);
CREATE INDEX subscription_events_lease ON subscription_events (subscription_id, lease_id) WHERE lease_id IS NOT NULL;
CREATE INDEX subscription_events_expiry ON subscription_events (event_created_at);

-- Down Migration
DROP TABLE subscription_events;
DROP TABLE subscriptions;
