-- Costs besides fee, priority fee and tip that the signer paid (a router's platform fee, a
-- transfer to a third party), in lamports; part of total_cost_lamports. Rows stored before
-- this migration had none recorded and keep 0.
ALTER TABLE ${db}.transactions ${on_cluster} ADD COLUMN IF NOT EXISTS other_cost_lamports UInt64 DEFAULT 0 AFTER jito_tip_lamports;
