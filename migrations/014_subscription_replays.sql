-- Up Migration

-- A subscription's rate cap is a token bucket kept on its row, which every lease already locks: tokens refill at
-- rate_limit_per_second up to one second's worth, and a lease takes one per event.
ALTER TABLE subscriptions
  ADD COLUMN rate_limit_per_second integer CHECK (rate_limit_per_second > 0),
  ADD COLUMN rate_tokens double precision NOT NULL DEFAULT 0,
  ADD COLUMN rate_refilled_at timestamptz NOT NULL DEFAULT now(),
  -- Seconds an event waits before it is handed out again after its n-th lease ended without an ack (the last entry
  -- repeats); empty: at once.
  ADD COLUMN retry_schedule integer[] NOT NULL DEFAULT '{}',
  -- Set when retention dropped events after the ack floor that the subscription had not acked: they are gone.
  ADD COLUMN position_expired_at timestamptz;

-- A replay hands the events of a time range that its subscription has already read to it again, without moving
-- the subscription's position: it reads the range in cursor order up to the subscription's frontier when it was
-- made (what lies beyond, the live read hands out once) into the pending set, tagging each row so its progress
-- can be counted. Everything up to a frontier is committed, so a read that comes back short has read it all.
CREATE TABLE subscription_replays (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  subscription_id uuid NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
  from_at timestamptz NOT NULL,
  to_at timestamptz NOT NULL CHECK (to_at > from_at),
  until_txid xid8 NOT NULL,
  until_seq bigint NOT NULL,
  cursor_txid xid8 NOT NULL DEFAULT '0',
  cursor_seq bigint NOT NULL DEFAULT 0,
  total integer NOT NULL,
  read integer NOT NULL DEFAULT 0,
  read_complete boolean NOT NULL DEFAULT false,
  cancelled_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX subscription_replays_subscription ON subscription_replays (subscription_id, created_at);

ALTER TABLE subscription_events ADD COLUMN replay_id uuid;
CREATE INDEX subscription_events_replay ON subscription_events (replay_id) WHERE replay_id IS NOT NULL AND state = 'pending';

-- Down Migration
DROP INDEX subscription_events_replay;
ALTER TABLE subscription_events DROP COLUMN replay_id;
DROP TABLE subscription_replays;
ALTER TABLE subscriptions DROP COLUMN rate_limit_per_second, DROP COLUMN rate_tokens, DROP COLUMN rate_refilled_at, DROP COLUMN position_expired_at, DROP COLUMN retry_schedule;
