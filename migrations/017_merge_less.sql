-- Embedded only, as 008: `${bundled_engine_settings}` now sets `merge_selector_base = 40`
-- (was 10). A row of a small insert was rewritten by a merge at every tenfold of part size
-- (1k → 10k → 100k → 1M rows), each rewrite costing about what the insert did; with 40 it is
-- rewritten about half as often, for more parts per partition (docs/performance.md). This
-- applies it to data dirs migrated before; a server keeps its defaults (the setting restated
-- below is migration 006's).
ALTER TABLE ${db}.transactions ${on_cluster} MODIFY SETTING
    vertical_merge_algorithm_min_rows_to_activate = 32768${bundled_engine_settings};
