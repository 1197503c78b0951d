-- Where Kafka ingest read each row: its partition and offset (null for other sources). After a
-- restart the consumer re-reads offsets that a crashed owner may have stored without committing;
-- a duplicate there is published again on the derived topics only when its stored row came from
-- that very message, so a signature that upstream sent twice is not published twice. Rows
-- stored before this migration have no origin.
ALTER TABLE ${db}.transactions ${on_cluster} ADD COLUMN IF NOT EXISTS kafka_partition Nullable(Int32) AFTER source;
ALTER TABLE ${db}.transactions ${on_cluster} ADD COLUMN IF NOT EXISTS kafka_offset Nullable(Int64) AFTER kafka_partition;
