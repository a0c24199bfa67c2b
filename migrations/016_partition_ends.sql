-- Up Migration

-- The end (exclusive, in epoch milliseconds) of the time a partition's rows belong to, read from its bound: a
-- range's upper bound, or for a dedup keys partition (one period n, dedup_period()) the start of period n + 1.
-- Null where nothing ends it: DEFAULT, MAXVALUE, infinity, a list of several values. The bound is printed and read
-- back under DateStyle ISO and TimeZone UTC fixed for the function, so the round trip is exact whatever the
-- session's settings (another DateStyle prints zone names, which are read back wrongly or not at all).
CREATE FUNCTION partition_ends_at(partition regclass) RETURNS double precision LANGUAGE plpgsql STABLE
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

-- Down Migration
DROP FUNCTION partition_ends_at(regclass);
