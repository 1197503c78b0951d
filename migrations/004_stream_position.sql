-- The live stream's position of each stored transaction: assigned at store time from one
-- sequence (a Redis counter shared by every process when [redis] is configured), so a client
-- that reconnects with Last-Event-ID can be served what it missed from the warehouse.
-- Rows stored before this migration have position 0 and are never replayed.
ALTER TABLE ${db}.transactions ${on_cluster} ADD COLUMN IF NOT EXISTS stream_position UInt64 DEFAULT 0;
ALTER TABLE ${db}.transactions ${on_cluster} ADD INDEX IF NOT EXISTS stream_position_minmax stream_position TYPE minmax GRANULARITY 1;
