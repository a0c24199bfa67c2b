-- Up Migration

-- A previous signing secret is cleared once its overlap ends (plugins/webhook-secrets.ts sweeps every minute);
-- only rows inside an overlap are indexed, so the sweep costs nothing when no rotation is under way.
CREATE INDEX webhooks_previous_secret_until ON webhooks (previous_secret_until) WHERE previous_secret IS NOT NULL;

UPDATE webhooks SET previous_secret = NULL, previous_secret_until = NULL
WHERE previous_secret IS NOT NULL AND (previous_secret_until IS NULL OR previous_secret_until <= now());

-- Down Migration
DROP INDEX webhooks_previous_secret_until;
