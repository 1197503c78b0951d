-- The four daily views and tables that 016 moved into `daily_aggregates`, dropped in a migration
-- of their own: 016 reads them, and one crashed after these drops could not run again.
-- Data dirs that ran 016 before it was split dropped them there; these find nothing.
DROP VIEW IF EXISTS ${db}.daily_stats_mv ${on_cluster};
DROP VIEW IF EXISTS ${db}.daily_dex_stats_mv ${on_cluster};
DROP VIEW IF EXISTS ${db}.daily_token_stats_mv ${on_cluster};
DROP VIEW IF EXISTS ${db}.daily_signer_stats_mv ${on_cluster};
DROP TABLE IF EXISTS ${db}.daily_stats ${on_cluster};
DROP TABLE IF EXISTS ${db}.daily_dex_stats ${on_cluster};
DROP TABLE IF EXISTS ${db}.daily_token_stats ${on_cluster};
DROP TABLE IF EXISTS ${db}.daily_signer_stats ${on_cluster};
