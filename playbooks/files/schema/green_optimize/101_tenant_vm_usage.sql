-- Phase 3: per-tenant capacity (VMs, memory, disk) the dashboards read, as a materialized view
-- with the unique index REFRESH MATERIALIZED VIEW CONCURRENTLY needs (refreshes never block reads).
CREATE MATERIALIZED VIEW IF NOT EXISTS tenant_vm_usage AS
SELECT tenant_id, count(*) AS vms, sum(memory_mb) AS memory_mb, sum(disk_gb) AS disk_gb
  FROM vms
 GROUP BY tenant_id;
CREATE UNIQUE INDEX IF NOT EXISTS tenant_vm_usage_tenant_id_key ON tenant_vm_usage (tenant_id);
GRANT SELECT ON tenant_vm_usage TO novacron_tenant;
