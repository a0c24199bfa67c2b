-- Up Migration

-- Delivery workers are woken by the API after it commits new deliveries (coalesced over a few milliseconds,
-- like new events since migration 005) instead of by a NOTIFY in every inserting transaction. Deliveries
-- inserted by hand are still found by the workers' polling (WEBHOOK_POLL_INTERVAL_MS).
DROP TRIGGER deliveries_inserted ON deliveries;
DROP FUNCTION notify_deliveries_inserted();

-- Down Migration
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
