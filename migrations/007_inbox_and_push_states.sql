-- Up Migration

-- Two state machines, two fields. `status` is the inbox state only (pending, acknowledged, quarantined);
-- `delivery_status` is the push state (none when no endpoint matched, then pending, delivered, failed from
-- each endpoint's latest delivery). Push outcomes used to overwrite `status`, hiding events from leases.
ALTER TABLE events
  ADD COLUMN delivery_status text NOT NULL DEFAULT 'none'
    CONSTRAINT events_delivery_status_check CHECK (delivery_status IN ('none', 'pending', 'delivered', 'failed'));

-- Events with deliveries take their push state from each endpoint's latest delivery; those that were marked
-- delivered or failed were never acknowledged, so they go back to the pending inbox.
UPDATE events e SET
  delivery_status = latest.state,
  status = CASE WHEN e.status IN ('delivered', 'failed') THEN 'pending' ELSE e.status END
FROM (
  SELECT event_id,
         CASE WHEN bool_or(status = 'failed') THEN 'failed' WHEN bool_or(status = 'pending') THEN 'pending' ELSE 'delivered' END AS state
  FROM (SELECT DISTINCT ON (event_id, webhook_id) event_id, status FROM deliveries ORDER BY event_id, webhook_id, created_at DESC) AS per_endpoint
  GROUP BY event_id
) AS latest
WHERE e.id = latest.event_id;
-- Delivered/failed events whose deliveries are gone (endpoint deleted) still belong in the inbox.
UPDATE events SET status = 'pending' WHERE status IN ('delivered', 'failed');

ALTER TABLE events
  DROP CONSTRAINT events_status_check,
  ADD CONSTRAINT events_status_check CHECK (status IN ('pending', 'acknowledged', 'quarantined'));

-- Gap-free cursors. `seq` is taken at INSERT but a row becomes visible at COMMIT, and transactions commit
-- out of seq order, so paging by seq alone skips rows that commit late. Each row now also records the id of
-- its inserting transaction; readers only return rows whose transaction is older than the oldest one still
-- running (pg_snapshot_xmin of the current snapshot), and page in (txid, seq) order. Every transaction below
-- that horizon has ended, so no row can later appear before a position a reader has passed.
-- Existing rows are all committed: txid 0 keeps them in seq order, before every new row (no table rewrite).
ALTER TABLE events ADD COLUMN txid xid8 NOT NULL DEFAULT '0';
ALTER TABLE events ALTER COLUMN txid SET DEFAULT pg_current_xact_id();

DROP INDEX events_inbox;
DROP INDEX events_org_seq;
CREATE INDEX events_inbox ON events (organization_id, status, txid, seq);
CREATE INDEX events_org_position ON events (organization_id, txid, seq);
CREATE INDEX events_delivery_status ON events (organization_id, delivery_status, txid, seq) WHERE delivery_status IN ('pending', 'failed');

-- Down Migration
DROP INDEX events_delivery_status;
DROP INDEX events_org_position;
DROP INDEX events_inbox;
CREATE INDEX events_inbox ON events (organization_id, status, seq);
CREATE INDEX events_org_seq ON events (organization_id, seq);
ALTER TABLE events DROP COLUMN txid;
ALTER TABLE events
  DROP CONSTRAINT events_status_check,
  ADD CONSTRAINT events_status_check CHECK (status IN ('pending', 'acknowledged', 'quarantined', 'delivered', 'failed'));
UPDATE events SET status = delivery_status WHERE status = 'pending' AND delivery_status IN ('delivered', 'failed');
ALTER TABLE events DROP COLUMN delivery_status;
