-- Cancel requests for export jobs. A job runs in the process that accepted it; with several
-- processes on one ClickHouse, `DELETE /exports/{id}` may reach another one. That process
-- stores a row here, and the process running the job reads it on the job's next heartbeat and
-- stops the job (it ends `cancelled`, its staged files deleted). A request is never withdrawn;
-- old requests expire.
CREATE TABLE IF NOT EXISTS ${db}.export_cancels ${on_cluster}
(
    job_id String,
    requested_at DateTime64(3, 'UTC'),
    requested_by String
)
ENGINE = ${merge_tree}
ORDER BY job_id
TTL toDateTime(requested_at) + INTERVAL 30 DAY;
