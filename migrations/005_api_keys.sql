-- API keys: only the SHA-256 of each token is stored, never the token. One row per id
-- (ReplacingMergeTree on `version`): revoking inserts the row again with `revoked_at` set
-- and a higher version; reads use FINAL.

CREATE TABLE IF NOT EXISTS ${db}.api_keys ${on_cluster}
(
    id String,
    version UInt64,
    name String,
    roles Array(LowCardinality(String)),
    hash String,
    created_at DateTime64(3, 'UTC'),
    expires_at Nullable(DateTime64(3, 'UTC')),
    revoked_at Nullable(DateTime64(3, 'UTC'))
)
ENGINE = ${replacing_merge_tree}(version)
ORDER BY id;
