-- Up Migration

-- POST /api/keys/rotate may keep the old key working for a grace period (expires_in_seconds): its hash and the
-- moment it stops. Rotating again replaces both, so an organization has at most two working keys.
ALTER TABLE organizations
  ADD COLUMN previous_key_hash bytea,
  ADD COLUMN previous_key_expires_at timestamptz,
  ADD CONSTRAINT organizations_previous_key_expiry CHECK ((previous_key_hash IS NULL) = (previous_key_expires_at IS NULL));

-- Lookups of an old key during its grace period.
CREATE UNIQUE INDEX organizations_previous_key_hash ON organizations (previous_key_hash) WHERE previous_key_hash IS NOT NULL;

-- API servers keep the hashes of all valid keys in memory (lib/key-cache.ts), so a new organization must reach
-- them too: inserts notify as well, as "created:<id>" (nothing about it can be cached yet, so caches keep
-- what they hold; updates and deletions still send the bare id, which drops it).
CREATE OR REPLACE FUNCTION notify_organization_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('triggers_organizations', CASE TG_OP WHEN 'INSERT' THEN 'created:' || NEW.id::text ELSE OLD.id::text END);
  RETURN NULL;
END
$$;

DROP TRIGGER organization_changed ON organizations;
CREATE TRIGGER organization_changed
  AFTER INSERT OR UPDATE OR DELETE ON organizations
  FOR EACH ROW EXECUTE FUNCTION notify_organization_changed();

-- Down Migration
DROP TRIGGER organization_changed ON organizations;
CREATE OR REPLACE FUNCTION notify_organization_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('triggers_organizations', OLD.id::text);
  RETURN NULL;
END
$$;
CREATE TRIGGER organization_changed
  AFTER UPDATE OR DELETE ON organizations
  FOR EACH ROW EXECUTE FUNCTION notify_organization_changed();
DROP INDEX organizations_previous_key_hash;
ALTER TABLE organizations
  DROP CONSTRAINT organizations_previous_key_expiry,
  DROP COLUMN previous_key_expires_at,
  DROP COLUMN previous_key_hash;
