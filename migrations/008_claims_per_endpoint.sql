-- Up Migration

-- Workers claim due deliveries endpoint by endpoint (each endpoint's oldest first, up to its free capacity),
-- so the due index leads with the endpoint.
CREATE INDEX deliveries_due_per_webhook ON deliveries (webhook_id, next_attempt_at) WHERE status = 'pending';
DROP INDEX deliveries_due;

-- Deleting deliveries (with their webhook or organization) cascades to their attempts: without this index every
-- such delete scans the whole attempts table.
CREATE INDEX delivery_attempts_delivery ON delivery_attempts (delivery_id);

-- Down Migration
DROP INDEX delivery_attempts_delivery;
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
DROP INDEX deliveries_due_per_webhook;
