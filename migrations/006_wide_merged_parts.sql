-- Merges of the 114-column table gather column by column (vertical merges) once they make a
-- part of 32,768 rows or more: the key columns are merged first, then each other column on its
-- own, instead of copying whole rows through the replacing merge (less CPU per row merged:
-- benchmarks/warehouse_insert.py). A vertical merge needs a wide part, so parts of that size
-- are wide; smaller parts (most inserts, small merges) stay compact, one file instead of two
-- per column. The embedded engine also keeps every insert compact, whatever its size
-- (`bundled_engine_settings`, empty on a server: ClickHouse before 25.10 lacks the setting).
ALTER TABLE ${db}.transactions ${on_cluster} MODIFY SETTING
    min_bytes_for_wide_part = 0,
    min_rows_for_wide_part = 32768,
    vertical_merge_algorithm_min_rows_to_activate = 32768${bundled_engine_settings};
