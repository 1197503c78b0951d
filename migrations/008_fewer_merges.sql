-- The embedded warehouse merges `transactions` in ClickHouse's background threads on the
-- ingest box's own cores, where merges took more CPU than the inserts that caused them. With
-- `merge_selector_base = 10` (`bundled_merge_settings`, embedded only) the merge selector
-- waits for about ten parts of a size before merging them, so a row is rewritten fewer times
-- (benchmarks in docs/performance.md). A server keeps its defaults: the setting restated
-- below is migration 006's.
ALTER TABLE ${db}.transactions ${on_cluster} MODIFY SETTING
    vertical_merge_algorithm_min_rows_to_activate = 32768${bundled_merge_settings};
