-- Up Migration

-- One organization per API key; the key itself is never stored, only its SHA-256.
CREATE TABLE organizations (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 255),
  tier text NOT NULL CHECK (tier IN ('free', 'starter', 'professional', 'enterprise')),
  key_hash bytea NOT NULL UNIQUE,
  key_prefix text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  key_rotated_at timestamptz
);

CREATE TABLE events (
  id uuid PRIMARY KEY,
  -- Insertion order, used for inbox ordering and cursors.
  seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
  organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
  type text NOT NULL,
  payload jsonb NOT NULL,
  dedup_id text,
  source text,
  status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'acknowledged')),
  created_at timestamptz NOT NULL DEFAULT now(),
  acknowledged_at timestamptz,
  -- NULL dedup_ids never conflict, so events without one are always accepted.
  CONSTRAINT events_dedup UNIQUE (organization_id, dedup_id)
);

CREATE INDEX events_inbox ON events (organization_id, status, seq);
CREATE INDEX events_org_seq ON events (organization_id, seq);

-- Down Migration
DROP TABLE events;
DROP TABLE organizations;
