-- Partition pruning questions over `events` (hive-partitioned by day, 1,096 files), each
-- titled by the comment line above it.
-- full scan
SELECT count(*), sum(amount) FROM events;
-- one day
SELECT count(*), sum(amount) FROM events WHERE day = DATE '2024-07-01';
-- one month
SELECT count(*), sum(amount) FROM events WHERE day >= DATE '2024-12-01';
-- non-partition filter
SELECT count(*), sum(amount) FROM events WHERE user_id = 42;
