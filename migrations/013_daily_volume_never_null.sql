-- `daily_stats_mv` valued each row's volume in SOL as first-leg amount × gross_revenue_sol /
-- nullIf(gross_revenue, 0): NULL for a break-even route (gross revenue 0). A day whose rows in
-- one insert were all break-even summed to NULL, which `daily_stats.volume_sol` (Float64)
-- refuses: the insert failed after storing its rows, so the daily aggregates missed them (a
-- small batch of one break-even transaction was enough). Such a row now counts volume 0, as a
-- row without a SOL value already did. The view is made again with that one change; inserts
-- wait for migrations at start-up, so none passes between the two statements.
DROP VIEW IF EXISTS ${db}.daily_stats_mv ${on_cluster};

CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}.daily_stats_mv ${on_cluster} TO ${db}.daily_stats AS
SELECT
    toDate(block_time) AS date,
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
GROUP BY date
SETTINGS prefer_column_name_to_alias = 1;
