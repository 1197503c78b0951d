-- One materialized view and one table for the daily aggregates, instead of four of each: every
-- insert into `transactions` wrote a part (ten files) to each of the four, so a 1,000-row insert
-- cost 86-93 µs of CPU per row with them against 45-54 µs with this one view (a 12,000-row
-- insert 9.2-10.7 against 5.5-6.2), and their small parts were merged again and again.
-- `kind` says what a row aggregates: 'all' (`key` empty: every transaction of the day), 'dex',
-- 'token' (`key` the DEX or token a transaction touched, each once) or 'signer'. Every kind
-- carries every sum; the readers use `transactions` and `net_profit_sol` of the keyed kinds.
CREATE TABLE IF NOT EXISTS ${db}.daily_aggregates ${on_cluster}
(
    date Date,
    kind LowCardinality(String),
    key String,
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
ORDER BY (date, kind, key);

CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}.daily_aggregates_mv ${on_cluster} TO ${db}.daily_aggregates AS
SELECT
    toDate(block_time) AS date,
    aggregate.1 AS kind,
    aggregate.2 AS key,
    count() AS transactions,
    countIf(success) AS successful,
    countIf(circular) AS circular,
    countIf(net_profit_sol > 0) AS profitable,
    sum(ifNull((legs[1].amount_in / pow(10, legs[1].decimals_in)) * (gross_revenue_sol / nullIf(gross_revenue, 0)), 0)) AS volume_sol,
    sum(ifNull(gross_revenue_sol, 0)) AS gross_revenue_sol,
    sum(total_cost_sol) AS total_cost_sol,
    sum(jito_tip_lamports) / 1e9 AS jito_tips_sol,
    sum(ifNull(net_profit_sol, 0)) AS net_profit_sol
FROM ${db}.transactions
ARRAY JOIN arrayConcat(
    [('all', '')],
    arrayMap(dex -> ('dex', dex), arrayDistinct(dexes)),
    arrayMap(token -> ('token', token), arrayDistinct(route)),
    [('signer', signer)]
) AS aggregate
GROUP BY date, kind, key
SETTINGS prefer_column_name_to_alias = 1;

-- What the four tables hold moves over; inserts wait for migrations at start-up, so none passes
-- between these statements. A migration is recorded once all its statements ran: after a crash
-- in the middle this one runs again from the top, so it starts from an empty table (a second
-- copy of the moved rows would be summed with the first) and leaves the old tables to 018.
TRUNCATE TABLE IF EXISTS ${db}.daily_aggregates ${on_cluster};

INSERT INTO ${db}.daily_aggregates
SELECT date, 'all', '', transactions, successful, circular, profitable, volume_sol, gross_revenue_sol,
    total_cost_sol, jito_tips_sol, net_profit_sol
FROM ${db}.daily_stats;

INSERT INTO ${db}.daily_aggregates (date, kind, key, transactions, net_profit_sol)
SELECT date, 'dex', dex, transactions, net_profit_sol FROM ${db}.daily_dex_stats;

INSERT INTO ${db}.daily_aggregates (date, kind, key, transactions, net_profit_sol)
SELECT date, 'token', token, transactions, net_profit_sol FROM ${db}.daily_token_stats;

INSERT INTO ${db}.daily_aggregates (date, kind, key, transactions, net_profit_sol)
SELECT date, 'signer', signer, transactions, net_profit_sol FROM ${db}.daily_signer_stats;
