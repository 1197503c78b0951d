-- `schedule_claims` kept every claim for ever: a row per schedule and due time (half a million a
-- year for a schedule that runs every minute; a deleted schedule's rows stayed too), and every
-- process reads the whole table once a minute to find due times whose claiming process died.
-- A claim is needed only while it is fresh: competing processes read the winner right after
-- claiming, and a claim without a job is recorded as a failed run at the next start-up or
-- within a minute or two by any process still running. Thirty days is far beyond that, and
-- beyond an outage of every process. The retention counts from `claimed_at`, not `due_at`:
-- the claim that counts an interrupted run is keyed by the job's creation time, which may be
-- long past when the claim is made, and it must hold while processes compete for it.
ALTER TABLE ${db}.schedule_claims ${on_cluster} MODIFY TTL toDateTime(claimed_at) + INTERVAL 30 DAY;
