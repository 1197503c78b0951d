-- A dead letter's identity is its source and bytes: `digest` is MD5(raw), which the ingest
-- service computes too (hashlib) and inserts. A record rejected again (a client or Kafka
-- sending a batch again, a store retried, a replay that still fails) finds its unreplayed
-- letter by it instead of adding another. Rows stored before this migration get theirs from
-- the default when read. `replayed_at`: when a replay last re-ingested the letter (null if
-- never); a replay that still fails leaves it unreplayed with the new field and reason.
ALTER TABLE ${db}.dead_letters ${on_cluster} ADD COLUMN IF NOT EXISTS digest FixedString(16) DEFAULT MD5(raw) AFTER raw;
ALTER TABLE ${db}.dead_letters ${on_cluster} ADD COLUMN IF NOT EXISTS replayed_at Nullable(DateTime64(3, 'UTC')) AFTER replayed;
