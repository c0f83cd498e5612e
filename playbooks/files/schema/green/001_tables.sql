-- Green's target schema: blue's tables, with vms hash-partitioned by tenant and vm_metrics
-- range-partitioned by month (partitions come from pg_partition). Columns keep blue's order.
CREATE TABLE tenants (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    plan        text NOT NULL DEFAULT 'standard',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE users (
    id            bigserial PRIMARY KEY,
    tenant_id     bigint NOT NULL REFERENCES tenants (id),
    email         text NOT NULL UNIQUE,
    role          text NOT NULL DEFAULT 'member',
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_login_at timestamptz
);
CREATE TABLE compute_nodes (
    id          bigserial PRIMARY KEY,
    hostname    text NOT NULL UNIQUE,
    datacenter  text NOT NULL,
    vcenter_id  integer NOT NULL,
    cpu_cores   integer NOT NULL,
    memory_gb   integer NOT NULL,
    status      text NOT NULL DEFAULT 'active',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE vms (
    id          bigserial,
    tenant_id   bigint NOT NULL REFERENCES tenants (id),
    vcenter_id  integer NOT NULL,
    node_id     bigint REFERENCES compute_nodes (id),
    name        text NOT NULL,
    state       text NOT NULL DEFAULT 'running',
    vcpus       integer NOT NULL,
    memory_mb   integer NOT NULL,
    disk_gb     integer NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
) PARTITION BY HASH (tenant_id);
CREATE TABLE vm_metrics (
    id                bigserial,
    vm_id             bigint NOT NULL,
    collected_at      timestamptz NOT NULL,
    cpu_pct           numeric(5,2) NOT NULL,
    memory_pct        numeric(5,2) NOT NULL,
    disk_read_bytes   bigint NOT NULL,
    disk_write_bytes  bigint NOT NULL,
    net_rx_bytes      bigint NOT NULL,
    net_tx_bytes      bigint NOT NULL,
    PRIMARY KEY (collected_at, id)
) PARTITION BY RANGE (collected_at);
CREATE TABLE audit_log (
    id           bigserial PRIMARY KEY,
    tenant_id    bigint NOT NULL,
    user_id      bigint,
    action       text NOT NULL,
    object_type  text NOT NULL,
    object_id    bigint,
    details      jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now()
);
