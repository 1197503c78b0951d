-- The embedded warehouse merges `transactions` in ClickHouse's background threads on the
-- ingest box's own cores, where merges took more CPU than the inserts that caused them. Since
-- this migration, `${bundled_engine_settings}` (embedded only) also sets
-- `merge_selector_base = 10`: the merge selector waits for about ten parts of a size before
-- merging them, so a row is rewritten fewer times (benchmarks in docs/performance.md). This
-- applies it to data dirs that ran migration 006 before. A server keeps its defaults: the
-- setting restated below is migration 006's.
ALTER TABLE ${db}.transactions ${on_cluster} MODIFY SETTING
    vertical_merge_algorithm_min_rows_to_activate = 32768${bundled_engine_settings};
