-- NovaCron-like schema and generated rows for the lab's blue database. Plain SQL, run by
-- playbooks/sample_data.yml through community.postgresql.postgresql_script with two named
-- arguments: rows (total rows across all tables) and reset (true: empty the tables first).
-- The driver sends the file as one query, which PostgreSQL runs as one transaction. Rows go only
-- into empty tables, so a second run changes nothing (the playbook does not even run it then).
-- The driver reads every percent sign as a placeholder: this file has none but the two arguments
-- (mod() below where the remainder operator would be).

CREATE TABLE IF NOT EXISTS tenants (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    plan        text NOT NULL DEFAULT 'standard',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS users (
    id            bigserial PRIMARY KEY,
    tenant_id     bigint NOT NULL REFERENCES tenants (id),
    email         text NOT NULL UNIQUE,
    role          text NOT NULL DEFAULT 'member',
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_login_at timestamptz
);
CREATE TABLE IF NOT EXISTS compute_nodes (
    id          bigserial PRIMARY KEY,
    hostname    text NOT NULL UNIQUE,
    datacenter  text NOT NULL,
    vcenter_id  integer NOT NULL,
    cpu_cores   integer NOT NULL,
    memory_gb   integer NOT NULL,
    status      text NOT NULL DEFAULT 'active',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS vms (
    id          bigserial PRIMARY KEY,
    tenant_id   bigint NOT NULL REFERENCES tenants (id),
    vcenter_id  integer NOT NULL,
    node_id     bigint REFERENCES compute_nodes (id),
    name        text NOT NULL,
    state       text NOT NULL DEFAULT 'running',
    vcpus       integer NOT NULL,
    memory_mb   integer NOT NULL,
    disk_gb     integer NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS vms_tenant_id_idx ON vms (tenant_id);
CREATE TABLE IF NOT EXISTS vm_metrics (
    id                bigserial PRIMARY KEY,
    vm_id             bigint NOT NULL REFERENCES vms (id) ON DELETE CASCADE,
    collected_at      timestamptz NOT NULL,
    cpu_pct           numeric(5,2) NOT NULL,
    memory_pct        numeric(5,2) NOT NULL,
    disk_read_bytes   bigint NOT NULL,
    disk_write_bytes  bigint NOT NULL,
    net_rx_bytes      bigint NOT NULL,
    net_tx_bytes      bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS vm_metrics_vm_id_collected_at_idx ON vm_metrics (vm_id, collected_at);
CREATE TABLE IF NOT EXISTS audit_log (
    id           bigserial PRIMARY KEY,
    tenant_id    bigint NOT NULL,
    user_id      bigint,
    action       text NOT NULL,
    object_type  text NOT NULL,
    object_id    bigint,
    details      jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- The load, as a function of the session (pg_temp: it leaves nothing behind in the database).
CREATE FUNCTION pg_temp.novacron_sample_load(total bigint, reset boolean)
RETURNS boolean
LANGUAGE plpgsql AS $load$
DECLARE
    -- How many rows per table for `total` rows in all (vm_metrics and audit_log take the bulk).
    n_tenants bigint := greatest(10, total / 3000);
    n_users   bigint := greatest(20, total / 30);
    n_nodes   bigint := greatest(10, total / 1500);
    n_vms     bigint := greatest(50, total / 6);
    n_metrics bigint := greatest(100, total / 2);
    n_audit   bigint := greatest(100, total - n_tenants - n_users - n_nodes - n_vms - n_metrics);
BEGIN
    IF reset THEN
        TRUNCATE audit_log, vm_metrics, vms, compute_nodes, users, tenants RESTART IDENTITY;
    END IF;
    IF EXISTS (SELECT 1 FROM tenants) THEN
        RETURN false;
    END IF;
    INSERT INTO tenants (id, name, plan, created_at)
    SELECT g, 'tenant-' || g, (ARRAY['free', 'standard', 'enterprise'])[1 + mod(g, 3)],
           now() - mod(g, 900) * interval '1 day'
    FROM generate_series(1::bigint, n_tenants) AS g;

    INSERT INTO users (id, tenant_id, email, role, created_at, last_login_at)
    SELECT g, 1 + mod(g, n_tenants), 'user' || g || '@tenant-' || (1 + mod(g, n_tenants)) || '.example',
           (ARRAY['owner', 'admin', 'member', 'viewer'])[1 + mod(g, 4)],
           now() - mod(g, 700) * interval '1 day',
           CASE WHEN mod(g, 5) = 0 THEN NULL ELSE now() - mod(g, 30) * interval '1 hour' END
    FROM generate_series(1::bigint, n_users) AS g;

    INSERT INTO compute_nodes (id, hostname, datacenter, vcenter_id, cpu_cores, memory_gb, status)
    SELECT g, 'esx-' || lpad(g::text, 5, '0'), (ARRAY['fra1', 'ams2', 'lon3'])[1 + mod(g, 3)], 1 + mod(g, 8),
           (ARRAY[32, 64, 96, 128])[1 + mod(g, 4)], (ARRAY[256, 512, 768, 1024])[1 + mod(g, 4)],
           CASE WHEN mod(g, 50) = 0 THEN 'maintenance' ELSE 'active' END
    FROM generate_series(1::bigint, n_nodes) AS g;

    INSERT INTO vms (id, tenant_id, vcenter_id, node_id, name, state, vcpus, memory_mb, disk_gb, created_at, updated_at)
    SELECT g, 1 + mod(g, n_tenants), 1 + mod(g, 8), 1 + mod(g, n_nodes), 'vm-' || g,
           (ARRAY['running', 'running', 'running', 'stopped', 'suspended'])[1 + mod(g, 5)],
           (ARRAY[1, 2, 4, 8, 16])[1 + mod(g, 5)], (ARRAY[1024, 2048, 4096, 8192, 16384])[1 + mod(g, 5)],
           (ARRAY[20, 40, 80, 160, 320])[1 + mod(g, 5)],
           now() - mod(g, 365) * interval '1 day', now() - mod(g, 48) * interval '1 hour'
    FROM generate_series(1::bigint, n_vms) AS g;

    -- Six months of samples, so that monthly range partitions have something to hold.
    INSERT INTO vm_metrics (id, vm_id, collected_at, cpu_pct, memory_pct, disk_read_bytes, disk_write_bytes, net_rx_bytes, net_tx_bytes)
    SELECT g, 1 + mod(g, n_vms), now() - (g * 262800 / n_metrics) * interval '1 minute',
           mod(g * 7919, 10000) / 100.0, mod(g * 104729, 10000) / 100.0,
           mod(g * 4096, 1000000007), mod(g * 8192, 1000000009), mod(g * 1500, 1000000021), mod(g * 1200, 1000000033)
    FROM generate_series(1::bigint, n_metrics) AS g;

    INSERT INTO audit_log (id, tenant_id, user_id, action, object_type, object_id, details, created_at)
    SELECT g, 1 + mod(g, n_tenants), 1 + mod(g, n_users),
           (ARRAY['vm.create', 'vm.start', 'vm.stop', 'vm.resize', 'user.login'])[1 + mod(g, 5)],
           CASE WHEN mod(g, 5) = 4 THEN 'user' ELSE 'vm' END, 1 + mod(g, n_vms),
           jsonb_build_object('source', 'sample', 'seq', g), now() - mod(g, 100000) * interval '1 minute'
    FROM generate_series(1::bigint, n_audit) AS g;

    -- Ids were given explicitly (stable across reloads): move each sequence past them.
    PERFORM setval(pg_get_serial_sequence('tenants', 'id'), n_tenants),
            setval(pg_get_serial_sequence('users', 'id'), n_users),
            setval(pg_get_serial_sequence('compute_nodes', 'id'), n_nodes),
            setval(pg_get_serial_sequence('vms', 'id'), n_vms),
            setval(pg_get_serial_sequence('vm_metrics', 'id'), n_metrics),
            setval(pg_get_serial_sequence('audit_log', 'id'), n_audit);
    ANALYZE;
    RETURN true;
END
$load$;

SELECT pg_temp.novacron_sample_load(%(rows)s, %(reset)s) AS loaded;
