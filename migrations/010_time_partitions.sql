-- Up Migration

-- Retention by time partitions (issue 14). Events, their deliveries and the deliveries' attempts are partitioned
-- by the event's creation day (UTC), so one day of them expires together by dropping that day's three partitions
-- (lib/retention.ts; never DELETE, which would bloat the tables and slow ingest). A delivery and an attempt carry
-- their event's created_at (event_created_at) as partition key.
--
-- Unique keys of a partitioned table must include its partition key, so (organization_id, dedup_id) can no longer
-- be unique on events: dedup keys move to event_dedup_keys, partitioned by 30-day dedup periods. A key is unique
-- within its period (the primary key includes the period) and the insert looks the key up in earlier periods,
-- which are few (EVENT_RETENTION_DAYS / 30 + 1), so a dedup_id is recognized for as long as its event is kept
-- (dedup_keys_in_earlier_periods below keeps that true for inserts running across a period boundary).
--
-- Existing rows are copied: events older than today (UTC) into one "before" partition per table (dropped once its
-- newest day leaves the retention window), today's into today's partition. Foreign keys between the three tables
-- are not kept (a foreign key to a partitioned table blocks dropping its partitions, and checks every insert):
-- deliveries are only written for an existing event, and a day's three partitions are dropped in one
-- transaction. Deleting a webhook or an organization still cascades to all three.

-- Creates `<parent>_pYYYYMMDD` holding `day` (UTC) unless it exists; true when it was created.
CREATE FUNCTION create_day_partition(parent regclass, day date) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
  name text := parent::text || '_p' || to_char(day, 'YYYYMMDD');
BEGIN
  IF to_regclass(name) IS NOT NULL THEN RETURN false; END IF;
  EXECUTE format('CREATE TABLE %I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
    name, parent, day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC');
  RETURN true;
END
$$;

-- Dedup periods: 30 days each, counted from the Unix epoch, so they start at midnight UTC.
CREATE FUNCTION dedup_period(at timestamptz) RETURNS integer LANGUAGE sql IMMUTABLE AS $$
  SELECT floor(extract(epoch FROM at) / 2592000)::integer
$$;

-- Creates `event_dedup_keys_period_<n>` unless it exists; true when it was created.
CREATE FUNCTION create_dedup_partition(period integer) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
  name text := 'event_dedup_keys_period_' || period;
BEGIN
  IF to_regclass(name) IS NOT NULL THEN RETURN false; END IF;
  EXECUTE format('CREATE TABLE %I PARTITION OF event_dedup_keys FOR VALUES IN (%s)', name, period);
  RETURN true;
END
$$;

-- The given dedup keys already stored in an earlier dedup period: the inserts' look-up before they claim a key in the
-- current period (whose primary key catches the same key within the period, even from a transaction still open).
-- Across a period boundary an insert of the previous period may still be open, its key invisible: so every
-- caller holds a shared lock on its period until it commits, and a caller waits for the previous period's
-- holders to end before it looks (a VOLATILE function's query takes a fresh snapshot, which then sees their keys).
-- A caller whose period ended before it took its lock may have been missed by the next period's callers: it
-- fails with a serialization failure, and is retried (in the new period).
CREATE FUNCTION dedup_keys_in_earlier_periods(organization_ids uuid[], dedup_ids text[])
RETURNS TABLE (organization_id uuid, dedup_id text) LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  current_period integer := dedup_period(now());
BEGIN
  PERFORM pg_advisory_xact_lock_shared(714001401, current_period);
  IF dedup_period(clock_timestamp()) <> current_period THEN
    RAISE EXCEPTION 'dedup period % ended while this insert started', current_period USING ERRCODE = 'serialization_failure';
  END IF;
  PERFORM pg_advisory_lock(714001401, current_period - 1);
  PERFORM pg_advisory_unlock(714001401, current_period - 1);
  RETURN QUERY
    SELECT DISTINCT k.organization_id, k.dedup_id
    FROM unnest(organization_ids, dedup_ids) AS i (organization_id, dedup_id)
    JOIN event_dedup_keys k ON k.organization_id = i.organization_id AND k.dedup_id = i.dedup_id
    WHERE k.period < current_period;
END
$$;

ALTER TABLE events RENAME TO events_unpartitioned;
ALTER TABLE deliveries RENAME TO deliveries_unpartitioned;
ALTER TABLE delivery_attempts RENAME TO delivery_attempts_unpartitioned;

CREATE TABLE events (
  id uuid NOT NULL,
  -- Insertion order; with txid, the inbox's cursor order.
  seq bigint GENERATED ALWAYS AS IDENTITY,
  organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
  type text NOT NULL,
  payload jsonb NOT NULL,
  dedup_id text,
  source text,
  status text NOT NULL DEFAULT 'pending' CONSTRAINT events_status_check CHECK (status IN ('pending', 'acknowledged', 'quarantined')),
  created_at timestamptz NOT NULL DEFAULT now(),
  acknowledged_at timestamptz,
  lease_id uuid,
  leased_until timestamptz,
  lease_count integer NOT NULL DEFAULT 0,
  delivery_status text NOT NULL DEFAULT 'none'
    CONSTRAINT events_delivery_status_check CHECK (delivery_status IN ('none', 'pending', 'delivered', 'failed')),
  txid xid8 NOT NULL DEFAULT pg_current_xact_id()
) PARTITION BY RANGE (created_at);

CREATE TABLE deliveries (
  id uuid NOT NULL DEFAULT gen_random_uuid(),
  event_id uuid NOT NULL,
  -- The event's created_at: the partition key, so a delivery lives and expires with its event.
  event_created_at timestamptz NOT NULL,
  webhook_id uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
  status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
  attempts integer NOT NULL DEFAULT 0,
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  claimed_until timestamptz,
  created_at timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (event_created_at);

CREATE TABLE delivery_attempts (
  id bigint GENERATED ALWAYS AS IDENTITY,
  delivery_id uuid NOT NULL,
  webhook_id uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
  event_id uuid NOT NULL,
  event_created_at timestamptz NOT NULL,
  attempt integer NOT NULL,
  status text NOT NULL CHECK (status IN ('succeeded', 'failed')),
  response_status integer,
  error text,
  duration_ms integer NOT NULL,
  attempted_at timestamptz NOT NULL DEFAULT now(),
  next_attempt_at timestamptz
) PARTITION BY RANGE (event_created_at);

-- One row per (organization, dedup_id) per dedup period, with what a duplicate's answer needs of the original.
CREATE TABLE event_dedup_keys (
  organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
  dedup_id text NOT NULL,
  period integer NOT NULL,
  event_id uuid NOT NULL,
  type text NOT NULL,
  created_at timestamptz NOT NULL,
  PRIMARY KEY (organization_id, dedup_id, period)
) PARTITION BY LIST (period);

-- Attempts of events older than attempts_from are no longer logged: their partition may be gone
-- (DELIVERY_ATTEMPT_RETENTION_DAYS shorter than EVENT_RETENTION_DAYS). Moved forward by the maintenance in the
-- transaction that drops attempt partitions.
CREATE TABLE retention_horizon (
  singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  attempts_from timestamptz NOT NULL DEFAULT '-infinity'
);
INSERT INTO retention_horizon DEFAULT VALUES;

-- Partitions for the existing rows: everything before today (UTC) in one, then a day each up to two days ahead
-- (and up to the newest row, should a clock have run ahead); the service creates the rest at start-up.
DO $$
DECLARE
  today date := (now() AT TIME ZONE 'UTC')::date;
  last_day date := greatest(today + 2, (SELECT (max(created_at) AT TIME ZONE 'UTC')::date FROM events_unpartitioned));
  parent text;
BEGIN
  FOREACH parent IN ARRAY ARRAY['events', 'deliveries', 'delivery_attempts'] LOOP
    EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (MINVALUE) TO (%L)',
      parent || '_before_' || to_char(today, 'YYYYMMDD'), parent, today::timestamp AT TIME ZONE 'UTC');
    FOR n IN 0 .. last_day - today LOOP
      PERFORM create_day_partition(parent::regclass, today + n);
    END LOOP;
  END LOOP;
  PERFORM create_dedup_partition(dedup_period(now()));
  PERFORM create_dedup_partition(dedup_period(now()) + 1);
END
$$;

INSERT INTO events (id, seq, organization_id, type, payload, dedup_id, source, status, created_at, acknowledged_at,
                    lease_id, leased_until, lease_count, delivery_status, txid)
OVERRIDING SYSTEM VALUE
SELECT id, seq, organization_id, type, payload, dedup_id, source, status, created_at, acknowledged_at,
       lease_id, leased_until, lease_count, delivery_status, txid
FROM events_unpartitioned;
SELECT setval(pg_get_serial_sequence('events', 'seq'), coalesce((SELECT max(seq) FROM events_unpartitioned), 0) + 1, false);

INSERT INTO deliveries (id, event_id, event_created_at, webhook_id, status, attempts, next_attempt_at, claimed_until, created_at)
SELECT d.id, d.event_id, e.created_at, d.webhook_id, d.status, d.attempts, d.next_attempt_at, d.claimed_until, d.created_at
FROM deliveries_unpartitioned d JOIN events_unpartitioned e ON e.id = d.event_id;

-- Attempts name their event without a foreign key; one whose event is gone keeps its own time.
INSERT INTO delivery_attempts (id, delivery_id, webhook_id, event_id, event_created_at, attempt, status, response_status, error,
                               duration_ms, attempted_at, next_attempt_at)
OVERRIDING SYSTEM VALUE
SELECT a.id, a.delivery_id, a.webhook_id, a.event_id, coalesce(e.created_at, a.attempted_at), a.attempt, a.status, a.response_status,
       a.error, a.duration_ms, a.attempted_at, a.next_attempt_at
FROM delivery_attempts_unpartitioned a LEFT JOIN events_unpartitioned e ON e.id = a.event_id;
SELECT setval(pg_get_serial_sequence('delivery_attempts', 'id'), coalesce((SELECT max(id) FROM delivery_attempts_unpartitioned), 0) + 1, false);

-- Existing dedup_ids join the current period: remembered from now on like new ones.
INSERT INTO event_dedup_keys (organization_id, dedup_id, period, event_id, type, created_at)
SELECT organization_id, dedup_id, dedup_period(now()), id, type, created_at
FROM events_unpartitioned WHERE dedup_id IS NOT NULL;

DROP TABLE delivery_attempts_unpartitioned;
DROP TABLE deliveries_unpartitioned;
DROP TABLE events_unpartitioned;

-- Keys and indexes after the copy: built once per partition instead of updated row by row.
ALTER TABLE events ADD PRIMARY KEY (id, created_at);
CREATE INDEX events_inbox ON events (organization_id, status, txid, seq);
CREATE INDEX events_org_position ON events (organization_id, txid, seq);
CREATE INDEX events_delivery_status ON events (organization_id, delivery_status, txid, seq) WHERE delivery_status IN ('pending', 'failed');
CREATE INDEX events_lease ON events (lease_id) WHERE lease_id IS NOT NULL;
CREATE INDEX events_leased_until ON events (organization_id, leased_until) WHERE status = 'pending' AND leased_until IS NOT NULL;

ALTER TABLE deliveries ADD PRIMARY KEY (id, event_created_at);
CREATE INDEX deliveries_due_per_webhook ON deliveries (webhook_id, next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_event ON deliveries (event_id);
CREATE INDEX deliveries_webhook ON deliveries (webhook_id);

ALTER TABLE delivery_attempts ADD PRIMARY KEY (id, event_created_at);
CREATE INDEX delivery_attempts_webhook ON delivery_attempts (webhook_id, id DESC);
CREATE INDEX delivery_attempts_delivery ON delivery_attempts (delivery_id);

-- Down Migration
-- Back to unpartitioned tables, keeping every row that is still stored.
ALTER TABLE events RENAME TO events_partitioned;
ALTER TABLE deliveries RENAME TO deliveries_partitioned;
ALTER TABLE delivery_attempts RENAME TO delivery_attempts_partitioned;
ALTER INDEX events_inbox RENAME TO events_partitioned_inbox;
ALTER INDEX events_org_position RENAME TO events_partitioned_org_position;
ALTER INDEX events_delivery_status RENAME TO events_partitioned_delivery_status;
ALTER INDEX events_lease RENAME TO events_partitioned_lease;
ALTER INDEX events_leased_until RENAME TO events_partitioned_leased_until;
ALTER INDEX events_pkey RENAME TO events_partitioned_pkey;
ALTER INDEX deliveries_due_per_webhook RENAME TO deliveries_partitioned_due_per_webhook;
ALTER INDEX deliveries_event RENAME TO deliveries_partitioned_event;
ALTER INDEX deliveries_webhook RENAME TO deliveries_partitioned_webhook;
ALTER INDEX deliveries_pkey RENAME TO deliveries_partitioned_pkey;
ALTER INDEX delivery_attempts_webhook RENAME TO delivery_attempts_partitioned_webhook;
ALTER INDEX delivery_attempts_delivery RENAME TO delivery_attempts_partitioned_delivery;
ALTER INDEX delivery_attempts_pkey RENAME TO delivery_attempts_partitioned_pkey;

CREATE TABLE events (
  id uuid PRIMARY KEY,
  seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
  organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
  type text NOT NULL,
  payload jsonb NOT NULL,
  dedup_id text,
  source text,
  status text NOT NULL DEFAULT 'pending' CONSTRAINT events_status_check CHECK (status IN ('pending', 'acknowledged', 'quarantined')),
  created_at timestamptz NOT NULL DEFAULT now(),
  acknowledged_at timestamptz,
  lease_id uuid,
  leased_until timestamptz,
  lease_count integer NOT NULL DEFAULT 0,
  delivery_status text NOT NULL DEFAULT 'none'
    CONSTRAINT events_delivery_status_check CHECK (delivery_status IN ('none', 'pending', 'delivered', 'failed')),
  txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
  CONSTRAINT events_dedup UNIQUE (organization_id, dedup_id)
);
INSERT INTO events (id, seq, organization_id, type, payload, dedup_id, source, status, created_at, acknowledged_at,
                    lease_id, leased_until, lease_count, delivery_status, txid)
OVERRIDING SYSTEM VALUE
SELECT id, seq, organization_id, type, payload, dedup_id, source, status, created_at, acknowledged_at,
       lease_id, leased_until, lease_count, delivery_status, txid
FROM events_partitioned;
SELECT setval(pg_get_serial_sequence('events', 'seq'), coalesce((SELECT max(seq) FROM events_partitioned), 0) + 1, false);
CREATE INDEX events_inbox ON events (organization_id, status, txid, seq);
CREATE INDEX events_org_position ON events (organization_id, txid, seq);
CREATE INDEX events_delivery_status ON events (organization_id, delivery_status, txid, seq) WHERE delivery_status IN ('pending', 'failed');
CREATE INDEX events_lease ON events (lease_id) WHERE lease_id IS NOT NULL;
CREATE INDEX events_leased_until ON events (organization_id, leased_until) WHERE status = 'pending' AND leased_until IS NOT NULL;

CREATE TABLE deliveries (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  event_id uuid NOT NULL REFERENCES events (id) ON DELETE CASCADE,
  webhook_id uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
  status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
  attempts integer NOT NULL DEFAULT 0,
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  claimed_until timestamptz,
  created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO deliveries (id, event_id, webhook_id, status, attempts, next_attempt_at, claimed_until, created_at)
SELECT id, event_id, webhook_id, status, attempts, next_attempt_at, claimed_until, created_at FROM deliveries_partitioned d
WHERE EXISTS (SELECT 1 FROM events e WHERE e.id = d.event_id);
CREATE INDEX deliveries_due_per_webhook ON deliveries (webhook_id, next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_event ON deliveries (event_id);
CREATE INDEX deliveries_webhook ON deliveries (webhook_id);

CREATE TABLE delivery_attempts (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  delivery_id uuid NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
  webhook_id uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
  event_id uuid NOT NULL,
  attempt integer NOT NULL,
  status text NOT NULL CHECK (status IN ('succeeded', 'failed')),
  response_status integer,
  error text,
  duration_ms integer NOT NULL,
  attempted_at timestamptz NOT NULL DEFAULT now(),
  next_attempt_at timestamptz
);
INSERT INTO delivery_attempts (id, delivery_id, webhook_id, event_id, attempt, status, response_status, error, duration_ms, attempted_at, next_attempt_at)
OVERRIDING SYSTEM VALUE
SELECT id, delivery_id, webhook_id, event_id, attempt, status, response_status, error, duration_ms, attempted_at, next_attempt_at
FROM delivery_attempts_partitioned a WHERE EXISTS (SELECT 1 FROM deliveries d WHERE d.id = a.delivery_id);
SELECT setval(pg_get_serial_sequence('delivery_attempts', 'id'), coalesce((SELECT max(id) FROM delivery_attempts_partitioned), 0) + 1, false);
CREATE INDEX delivery_attempts_webhook ON delivery_attempts (webhook_id, id DESC);
CREATE INDEX delivery_attempts_delivery ON delivery_attempts (delivery_id);

DROP TABLE delivery_attempts_partitioned;
DROP TABLE deliveries_partitioned;
DROP TABLE events_partitioned;
DROP TABLE event_dedup_keys;
DROP TABLE retention_horizon;
DROP FUNCTION dedup_keys_in_earlier_periods(uuid[], text[]);
DROP FUNCTION create_dedup_partition(integer);
DROP FUNCTION dedup_period(timestamptz);
DROP FUNCTION create_day_partition(regclass, date);
