-- Who submitted each export job and created each schedule: `<kind>:<subject>` of the caller (the
-- API key id, the JWT `sub`, `admin_token:admin`), never a credential. With auth on, a caller that
-- is not an admin sees and manages only its own. Rows stored before this migration, and those the
-- local caller creates with auth off, have none (''): only admins (and, with auth off, local
-- callers) see them, since nothing says whose they are. A scheduled run's job is the schedule's.
ALTER TABLE ${db}.export_jobs ${on_cluster} ADD COLUMN IF NOT EXISTS principal String DEFAULT '' AFTER owner;
ALTER TABLE ${db}.schedules ${on_cluster} ADD COLUMN IF NOT EXISTS principal String DEFAULT '' AFTER consecutive_failures;
