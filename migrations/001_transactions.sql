-- The wide transactions table, dead letters, and the aggregates the API serves.
-- Columns must match arbitrage.model.STORED_COLUMNS (tests/unit/test_schema.py checks).
-- One row per signature: ingest skips signatures already stored, and ReplacingMergeTree
-- on (block_time, signature) collapses any copy that a crash could still slip in.
CREATE TABLE IF NOT EXISTS ${db}.transactions ${on_cluster}
(
    signature String CODEC(ZSTD(1)),
    slot UInt64 CODEC(Delta, ZSTD(1)),
    block_time DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    signer String CODEC(ZSTD(1)),
    success Bool,
    fee_lamports UInt64 CODEC(T64, ZSTD(1)),
    priority_fee_lamports UInt64 CODEC(T64, ZSTD(1)),
    jito_tip_lamports UInt64 CODEC(T64, ZSTD(1)),
    compute_units_consumed Nullable(UInt64) CODEC(ZSTD(1)),
    compute_unit_limit Nullable(UInt64) CODEC(ZSTD(1)),
    bundle_id Nullable(String) CODEC(ZSTD(1)),
    leader Nullable(String) CODEC(ZSTD(1)),
    legs Array(Tuple(dex LowCardinality(String), pool String, token_in String, token_out String, amount_in UInt64, amount_out UInt64, decimals_in UInt8, decimals_out UInt8, reserve_in Nullable(UInt64), reserve_out Nullable(UInt64), price Nullable(Float64))) CODEC(ZSTD(1)),
    route Array(String) CODEC(ZSTD(1)),
    dexes Array(LowCardinality(String)),
    hops UInt8,
    circular Bool,
    start_token String CODEC(ZSTD(1)),
    gross_revenue Nullable(Float64) CODEC(ZSTD(1)),
    gross_revenue_sol Nullable(Float64) CODEC(ZSTD(1)),
    total_cost_lamports UInt64 CODEC(T64, ZSTD(1)),
    total_cost_sol Float64 CODEC(ZSTD(1)),
    net_profit_sol Nullable(Float64) CODEC(ZSTD(1)),
    source LowCardinality(String),
    ingested_at DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    INDEX idx_signature signature TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_signer signer TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_route route TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_dexes dexes TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_ingested ingested_at TYPE minmax GRANULARITY 1
)
ENGINE = ${replacing_merge_tree}
PARTITION BY toYYYYMM(block_time)
ORDER BY (block_time, signature)
-- Inserts write compact parts (one file, not two per column: the table is wide); merges widen them.
SETTINGS min_bytes_for_wide_part = 536870912, min_rows_for_wide_part = 1000000;

CREATE TABLE IF NOT EXISTS ${db}.dead_letters ${on_cluster}
(
    received_at DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    source LowCardinality(String),
    record_index UInt32,
    field String,
    reason String CODEC(ZSTD(1)),
    raw String CODEC(ZSTD(1)),
    replayed Bool DEFAULT false
)
ENGINE = ${merge_tree}
PARTITION BY toYYYYMM(received_at)
ORDER BY received_at;

CREATE TABLE IF NOT EXISTS ${db}.daily_stats ${on_cluster}
(
    date Date,
    transactions UInt64,
    successful UInt64,
    circular UInt64,
    profitable UInt64,
    volume_sol Float64,
    gross_revenue_sol Float64,
    total_cost_sol Float64,
    jito_tips_sol Float64,
    net_profit_sol Float64
)
ENGINE = ${summing_merge_tree}
ORDER BY date;

CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}.daily_stats_mv ${on_cluster} TO ${db}.daily_stats AS
SELECT
    toDate(block_time) AS date,
    count() AS transactions,
    countIf(success) AS successful,
    countIf(circular) AS circular,
    countIf(net_profit_sol > 0) AS profitable,
    sum(if(isNull(gross_revenue_sol), 0, (legs[1].amount_in / pow(10, legs[1].decimals_in)) * (gross_revenue_sol / nullIf(gross_revenue, 0)))) AS volume_sol,
    sum(ifNull(gross_revenue_sol, 0)) AS gross_revenue_sol,
    sum(total_cost_sol) AS total_cost_sol,
    sum(jito_tip_lamports) / 1e9 AS jito_tips_sol,
    sum(ifNull(net_profit_sol, 0)) AS net_profit_sol
FROM ${db}.transactions
GROUP BY date
SETTINGS prefer_column_name_to_alias = 1;

CREATE TABLE IF NOT EXISTS ${db}.daily_dex_stats ${on_cluster}
(
    date Date,
    dex LowCardinality(String),
    transactions UInt64,
    net_profit_sol Float64
)
ENGINE = ${summing_merge_tree}
ORDER BY (date, dex);

CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}.daily_dex_stats_mv ${on_cluster} TO ${db}.daily_dex_stats AS
SELECT toDate(block_time) AS date, dex, count() AS transactions, sum(ifNull(net_profit_sol, 0)) AS net_profit_sol
FROM ${db}.transactions ARRAY JOIN arrayDistinct(dexes) AS dex
GROUP BY date, dex
SETTINGS prefer_column_name_to_alias = 1;

CREATE TABLE IF NOT EXISTS ${db}.daily_token_stats ${on_cluster}
(
    date Date,
    token String,
    transactions UInt64,
    net_profit_sol Float64
)
ENGINE = ${summing_merge_tree}
ORDER BY (date, token);

CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}.daily_token_stats_mv ${on_cluster} TO ${db}.daily_token_stats AS
SELECT toDate(block_time) AS date, token, count() AS transactions, sum(ifNull(net_profit_sol, 0)) AS net_profit_sol
FROM ${db}.transactions ARRAY JOIN arrayDistinct(route) AS token
GROUP BY date, token
SETTINGS prefer_column_name_to_alias = 1;

CREATE TABLE IF NOT EXISTS ${db}.daily_signer_stats ${on_cluster}
(
    date Date,
    signer String,
    transactions UInt64,
    net_profit_sol Float64
)
ENGINE = ${summing_merge_tree}
ORDER BY (date, signer);

CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}.daily_signer_stats_mv ${on_cluster} TO ${db}.daily_signer_stats AS
SELECT toDate(block_time) AS date, signer, count() AS transactions, sum(ifNull(net_profit_sol, 0)) AS net_profit_sol
FROM ${db}.transactions
GROUP BY date, signer
SETTINGS prefer_column_name_to_alias = 1;
