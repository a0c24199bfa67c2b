-- Up Migration

-- Leases (visibility timeouts) for concurrent consumers, and the quarantine for events never acknowledged.
ALTER TABLE events
  ADD COLUMN lease_id uuid,
  ADD COLUMN leased_until timestamptz,
  ADD COLUMN lease_count integer NOT NULL DEFAULT 0,
  DROP CONSTRAINT events_status_check,
  ADD CONSTRAINT events_status_check CHECK (status IN ('pending', 'acknowledged', 'quarantined'));

-- Finds a lease's events, and expired leases to quarantine, without scanning the whole inbox.
CREATE INDEX events_lease ON events (lease_id) WHERE lease_id IS NOT NULL;
CREATE INDEX events_leased_until ON events (organization_id, leased_until) WHERE status = 'pending' AND leased_until IS NOT NULL;

-- Wakes long polls and event streams: one notification per organization per inserting statement,
-- carrying how many events it added ("<organization_id>:<count>").
CREATE FUNCTION notify_events_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('triggers_events', organization_id::text || ':' || count(*))
  FROM inserted_events
  GROUP BY organization_id;
  RETURN NULL;
END
$$;

CREATE TRIGGER events_inserted
  AFTER INSERT ON events
  REFERENCING NEW TABLE AS inserted_events
  FOR EACH STATEMENT EXECUTE FUNCTION notify_events_inserted();

-- Down Migration
DROP TRIGGER events_inserted ON events;
DROP FUNCTION notify_events_inserted();
DROP INDEX events_leased_until;
DROP INDEX events_lease;
ALTER TABLE events
  DROP CONSTRAINT events_status_check,
  ADD CONSTRAINT events_status_check CHECK (status IN ('pending', 'acknowledged')),
  DROP COLUMN lease_count,
  DROP COLUMN leased_until,
  DROP COLUMN lease_id;
