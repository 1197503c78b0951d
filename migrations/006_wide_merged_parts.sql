-- Merges of the 114-column table gather column by column (vertical merges) once they make a
-- part of 32,768 rows or more: the key columns are merged first, then each other column on its
-- own, instead of copying whole rows through the replacing merge (about half the CPU per row
-- merged, measured with chdb on 36k-600k-row merges). A vertical merge needs a wide part, so
-- merged parts of that size are wide; inserts (level 0) and smaller merges stay compact, one
-- file instead of two per column.
ALTER TABLE ${db}.transactions ${on_cluster} MODIFY SETTING
    min_bytes_for_wide_part = 0,
    min_rows_for_wide_part = 32768,
    min_level_for_wide_part = 1,
    vertical_merge_algorithm_min_rows_to_activate = 32768;
