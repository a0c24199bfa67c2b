-- Up Migration

-- Organizations' push endpoints. event_types holds exact types or prefixes ending in '*'; empty means all.
CREATE TABLE webhooks (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
  url text NOT NULL,
  event_types text[] NOT NULL DEFAULT '{}',
  description text,
  enabled boolean NOT NULL DEFAULT true,
  disabled_reason text,
  secret text NOT NULL,
  -- After a rotation the old secret keeps signing (as a second signature) until previous_secret_until.
  previous_secret text,
  previous_secret_until timestamptz,
  consecutive_failures integer NOT NULL DEFAULT 0,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhooks_organization ON webhooks (organization_id);

-- The outbox: one row per (event, endpoint), written in the same statement as the event.
CREATE TABLE deliveries (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  event_id uuid NOT NULL REFERENCES events (id) ON DELETE CASCADE,
  webhook_id uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
  status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
  attempts integer NOT NULL DEFAULT 0,
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  -- A worker's claim; it lapses by itself if the worker dies mid-send.
  claimed_until timestamptz,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_event ON deliveries (event_id);
CREATE INDEX deliveries_webhook ON deliveries (webhook_id);

-- Every attempt, as users see it in GET /api/webhooks/:id/deliveries.
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
CREATE INDEX delivery_attempts_webhook ON delivery_attempts (webhook_id, id DESC);

ALTER TABLE events
  DROP CONSTRAINT events_status_check,
  ADD CONSTRAINT events_status_check CHECK (status IN ('pending', 'acknowledged', 'quarantined', 'delivered', 'failed'));

-- The one definition of event_types matching: exact types, 'prefix*' wildcards, empty list = everything.
CREATE FUNCTION webhook_matches(patterns text[], event_type text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
  SELECT cardinality(patterns) = 0 OR EXISTS (
    SELECT 1 FROM unnest(patterns) AS p
    WHERE p = event_type OR (right(p, 1) = '*' AND starts_with(event_type, left(p, -1)))
  )
$$;

-- Wakes delivery workers as soon as new deliveries are committed.
CREATE FUNCTION notify_deliveries_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM inserted_deliveries) THEN
    PERFORM pg_notify('triggers_deliveries', '');
  END IF;
  RETURN NULL;
END
$$;

CREATE TRIGGER deliveries_inserted
  AFTER INSERT ON deliveries
  REFERENCING NEW TABLE AS inserted_deliveries
  FOR EACH STATEMENT EXECUTE FUNCTION notify_deliveries_inserted();

-- Down Migration
DROP TRIGGER deliveries_inserted ON deliveries;
DROP FUNCTION notify_deliveries_inserted();
DROP FUNCTION webhook_matches(text[], text);
ALTER TABLE events
  DROP CONSTRAINT events_status_check,
  ADD CONSTRAINT events_status_check CHECK (status IN ('pending', 'acknowledged', 'quarantined'));
DROP TABLE delivery_attempts;
DROP TABLE deliveries;
DROP TABLE webhooks;
