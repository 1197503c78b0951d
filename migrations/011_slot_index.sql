-- Ingest de-duplication finds a stored copy of a transaction by its slot however far apart
-- the two block times are (sources may disagree on a block time, never on the slot). Slots
-- rise with the block times the table is sorted by, so a minmax index keeps that read to a
-- narrow stretch; parts stored before this migration get the index too.
ALTER TABLE ${db}.transactions ${on_cluster} ADD INDEX IF NOT EXISTS slot_minmax slot TYPE minmax GRANULARITY 1;
ALTER TABLE ${db}.transactions ${on_cluster} MATERIALIZE INDEX slot_minmax;
