-- zerodowntime: no-transaction
-- Blue, the live source: make every UPDATE/DELETE carry the columns green's keys need.
-- Green partitions vms by tenant_id and vm_metrics by collected_at, so their primary keys
-- include those columns; logical replication finds the target row by the replica identity
-- the publisher sends. Built CONCURRENTLY: blue keeps serving writes meanwhile.
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS vms_tenant_id_id_key ON vms (tenant_id, id);
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS vm_metrics_collected_at_id_key ON vm_metrics (collected_at, id);
ALTER TABLE vms REPLICA IDENTITY USING INDEX vms_tenant_id_id_key;
ALTER TABLE vm_metrics REPLICA IDENTITY USING INDEX vm_metrics_collected_at_id_key;
-- The initial copy reads the tables as the replication user.
GRANT SELECT ON tenants, users, compute_nodes, vms, vm_metrics, audit_log TO replicator;
