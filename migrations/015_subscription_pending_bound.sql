-- Up Migration

-- Where a subscription's pending rows may start below its ack floor: a redriven dead letter or a replayed event
-- (the only pending rows the floor has passed); null when it has none there. Every scan of the pending set starts
-- here or at the floor, never at the start of the subscription's rows, where each acked and forgotten row leaves
-- dead tuples until vacuum reaches them: a first drain of a large backlog would otherwise read more of them at each
-- lease.
ALTER TABLE subscriptions ADD COLUMN below_floor_txid xid8, ADD COLUMN below_floor_seq bigint;
-- Rows already there may lie below the floor: scanned from the beginning once, until a compaction finds none.
UPDATE subscriptions SET below_floor_txid = '0', below_floor_seq = 0;

-- Down Migration
ALTER TABLE subscriptions DROP COLUMN below_floor_txid, DROP COLUMN below_floor_seq;
