-- Up Migration

-- New events are announced by the API after each group commit, coalesced per organization over a few
-- milliseconds, instead of by a NOTIFY in every inserting transaction: each NOTIFY serializes commits on
-- PostgreSQL's notification queue lock and wakes every listening backend, which cost a third of ingest
-- throughput. Events inserted by hand no longer wake long polls early; those still find them at their deadline.
DROP TRIGGER events_inserted ON events;
DROP FUNCTION notify_events_inserted();

-- Down Migration
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
