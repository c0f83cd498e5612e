-- zerodowntime: no-transaction
-- A new index for green's audit queries, built without blocking writes.
CREATE INDEX CONCURRENTLY IF NOT EXISTS audit_log_tenant_id_created_at_idx ON audit_log (tenant_id, created_at);
