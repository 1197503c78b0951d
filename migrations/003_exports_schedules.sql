-- Export jobs and export schedules. Both tables keep one row per id: an update is an insert
-- of the whole row with a higher `version` (ReplacingMergeTree), read back with FINAL.

CREATE TABLE IF NOT EXISTS ${db}.export_jobs ${on_cluster}
(
    id String,
    version UInt64,
    state LowCardinality(String),
    format LowCardinality(String),
    request String CODEC(ZSTD(3)),
    destination String,
    schedule_id String,
    due_at Nullable(DateTime64(3, 'UTC')),
    created_at DateTime64(3, 'UTC'),
    started_at Nullable(DateTime64(3, 'UTC')),
    finished_at Nullable(DateTime64(3, 'UTC')),
    rows UInt64,
    rows_total UInt64,
    bytes UInt64,
    progress Float64,
    files String CODEC(ZSTD(3)),
    error String,
    ingested_after Nullable(DateTime64(3, 'UTC')),
    watermark Nullable(DateTime64(3, 'UTC')),
    attempt UInt32,
    owner String
)
ENGINE = ${replacing_merge_tree}(version)
ORDER BY id;

CREATE TABLE IF NOT EXISTS ${db}.schedules ${on_cluster}
(
    id String,
    version UInt64,
    deleted Bool,
    name String,
    format LowCardinality(String),
    frequency String,
    cron String,
    request String CODEC(ZSTD(3)),
    upload_to String,
    incremental Bool,
    enabled Bool,
    created_at DateTime64(3, 'UTC'),
    updated_at DateTime64(3, 'UTC'),
    watermark Nullable(DateTime64(3, 'UTC')),
    last_due Nullable(DateTime64(3, 'UTC')),
    last_success_at Nullable(DateTime64(3, 'UTC')),
    last_job_id String,
    last_error String,
    consecutive_failures UInt32
)
ENGINE = ${replacing_merge_tree}(version)
ORDER BY id;

-- One row per (schedule, due time) that some process claimed. Inserts carry an
-- insert_deduplication_token of the schedule id and due time, so only the first claim of a
-- due time is stored: the process whose owner id reads back won the lease.
CREATE TABLE IF NOT EXISTS ${db}.schedule_claims ${on_cluster}
(
    schedule_id String,
    due_at DateTime64(3, 'UTC'),
    owner String,
    claimed_at DateTime64(3, 'UTC')
)
ENGINE = ${merge_tree}
ORDER BY (schedule_id, due_at)
SETTINGS non_replicated_deduplication_window = 100000;
