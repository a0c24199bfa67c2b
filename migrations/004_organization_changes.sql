-- Up Migration

-- API servers cache organizations by key hash; any change to an organization (key rotation, tier) or its
-- deletion tells every instance to drop it, whichever process or tool made the change.
CREATE FUNCTION notify_organization_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('triggers_organizations', OLD.id::text);
  RETURN NULL;
END
$$;

CREATE TRIGGER organization_changed
  AFTER UPDATE OR DELETE ON organizations
  FOR EACH ROW EXECUTE FUNCTION notify_organization_changed();

-- Down Migration
DROP TRIGGER organization_changed ON organizations;
DROP FUNCTION notify_organization_changed();
