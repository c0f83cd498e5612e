-- Green enforces tenant isolation: a session in the tenant role sees only the rows of the tenant
-- in app.tenant_id (phase 4 checks it). The migration (migrator, a superuser) and the
-- subscription's apply worker bypass row level security, so replication is unaffected.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'novacron_tenant') THEN
        CREATE ROLE novacron_tenant NOLOGIN;
    END IF;
END
$$;
GRANT SELECT, INSERT, UPDATE, DELETE ON users, vms, audit_log TO novacron_tenant;
GRANT SELECT ON tenants, compute_nodes, vm_metrics TO novacron_tenant;
ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE vms ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON users USING (tenant_id = current_setting('app.tenant_id', true)::bigint);
CREATE POLICY tenant_isolation ON vms USING (tenant_id = current_setting('app.tenant_id', true)::bigint);
CREATE POLICY tenant_isolation ON audit_log USING (tenant_id = current_setting('app.tenant_id', true)::bigint);
