-- Up Migration

-- The partition creators answer the name of the partition they created, or NULL when it existed, so the
-- maintenance reads what it created from the one statement that creates (db/partitions.ts) instead of listing the
-- partitions before and after. The names are still made here only. A function's result type cannot be changed in
-- place: each is dropped and created again (nothing stored depends on them; only function bodies call them).
DROP FUNCTION create_day_partition(regclass, date);
-- Creates `<parent>_pYYYYMMDD` holding `day` (UTC) unless it exists; its name when it was created, else NULL.
CREATE FUNCTION create_day_partition(parent regclass, day date) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  name text := parent::text || '_p' || to_char(day, 'YYYYMMDD');
BEGIN
  IF to_regclass(name) IS NOT NULL THEN RETURN NULL; END IF;
  EXECUTE format('CREATE TABLE %I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
    name, parent, day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC');
  IF parent = 'deliveries'::regclass THEN
    EXECUTE format('ALTER TABLE %I SET (fillfactor = 50)', name);
  END IF;
  RETURN name;
END
$$;

DROP FUNCTION create_dedup_partition(integer);
-- Creates `event_dedup_keys_period_<n>` unless it exists; its name when it was created, else NULL.
CREATE FUNCTION create_dedup_partition(period integer) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  name text := 'event_dedup_keys_period_' || period;
BEGIN
  IF to_regclass(name) IS NOT NULL THEN RETURN NULL; END IF;
  EXECUTE format('CREATE TABLE %I PARTITION OF event_dedup_keys FOR VALUES IN (%s)', name, period);
  RETURN name;
END
$$;

-- The length of a dedup period in seconds (30 days), held here only: dedup_period() counts periods by it and
-- partition_ends_at() ends a dedup keys partition by it. Folded into a constant when their bodies are planned.
CREATE FUNCTION dedup_period_seconds() RETURNS integer LANGUAGE sql IMMUTABLE AS $$
  SELECT 2592000
$$;

-- Dedup periods: dedup_period_seconds() each, counted from the Unix epoch, so they start at midnight UTC.
-- Same result as migration 010's; no index, default or partition bound stores a call to it.
CREATE OR REPLACE FUNCTION dedup_period(at timestamptz) RETURNS integer LANGUAGE sql IMMUTABLE AS $$
  SELECT floor(extract(epoch FROM at) / dedup_period_seconds())::integer
$$;

-- Migration 016's, with a dedup period's length from dedup_period_seconds().
CREATE OR REPLACE FUNCTION partition_ends_at(partition regclass) RETURNS double precision LANGUAGE plpgsql STABLE
SET DateStyle = 'ISO, MDY' SET TimeZone = 'UTC' AS $$
DECLARE
  bound text := (SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE oid = partition);
  ends timestamptz;
BEGIN
  IF bound ~ '^FOR VALUES FROM \(.*\) TO \(''[^'']+''\)$' THEN
    ends := substring(bound FROM 'TO \(''([^'']+)''\)$')::timestamptz;
  ELSIF bound ~ '^FOR VALUES IN \(\d+\)$' THEN
    ends := to_timestamp((substring(bound FROM '\d+')::numeric + 1) * dedup_period_seconds());
  END IF;
  IF ends IS NULL OR NOT isfinite(ends) THEN RETURN NULL; END IF;
  RETURN extract(epoch FROM ends) * 1000;
END
$$;

-- Down Migration
-- Back to migration 016's partition_ends_at, 010's dedup_period and create_dedup_partition, 011's create_day_partition.
CREATE OR REPLACE FUNCTION partition_ends_at(partition regclass) RETURNS double precision LANGUAGE plpgsql STABLE
SET DateStyle = 'ISO, MDY' SET TimeZone = 'UTC' AS $$
DECLARE
  bound text := (SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE oid = partition);
  ends timestamptz;
BEGIN
  IF bound ~ '^FOR VALUES FROM \(.*\) TO \(''[^'']+''\)$' THEN
    ends := substring(bound FROM 'TO \(''([^'']+)''\)$')::timestamptz;
  ELSIF bound ~ '^FOR VALUES IN \(\d+\)$' THEN
    ends := to_timestamp((substring(bound FROM '\d+')::numeric + 1) * 2592000);
  END IF;
  IF ends IS NULL OR NOT isfinite(ends) THEN RETURN NULL; END IF;
  RETURN extract(epoch FROM ends) * 1000;
END
$$;

CREATE OR REPLACE FUNCTION dedup_period(at timestamptz) RETURNS integer LANGUAGE sql IMMUTABLE AS $$
  SELECT floor(extract(epoch FROM at) / 2592000)::integer
$$;

DROP FUNCTION dedup_period_seconds();

DROP FUNCTION create_dedup_partition(integer);
CREATE FUNCTION create_dedup_partition(period integer) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
  name text := 'event_dedup_keys_period_' || period;
BEGIN
  IF to_regclass(name) IS NOT NULL THEN RETURN false; END IF;
  EXECUTE format('CREATE TABLE %I PARTITION OF event_dedup_keys FOR VALUES IN (%s)', name, period);
  RETURN true;
END
$$;

DROP FUNCTION create_day_partition(regclass, date);
CREATE FUNCTION create_day_partition(parent regclass, day date) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
  name text := parent::text || '_p' || to_char(day, 'YYYYMMDD');
BEGIN
  IF to_regclass(name) IS NOT NULL THEN RETURN false; END IF;
  EXECUTE format('CREATE TABLE %I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
    name, parent, day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC');
  IF parent = 'deliveries'::regclass THEN
    EXECUTE format('ALTER TABLE %I SET (fillfactor = 50)', name);
  END IF;
  RETURN true;
END
$$;
