-- The SQLite path's target (playbooks/sqlite_migration.yml, schema_sync with
-- sqlite_partition_virtual_machines): vMiner's virtual_machines hash-partitioned by vcenter_id.
-- table_copy uses an existing table as it is and creates the other tables itself; the partitions
-- (sqlite_partition_count of them) are pg_partition's. A partitioned table's key holds its
-- partition key, so the key is (id, vcenter_id); the copy, its replay and table_compare find rows by id.
-- The column types are the copy's mapping of the SQLite declared types, with created_at and
-- updated_at as sqlite_column_types makes them (timestamptz).
CREATE TABLE IF NOT EXISTS virtual_machines (
    id bigint NOT NULL,
    vcenter_id bigint NOT NULL,
    host_id bigint,
    datastore_id bigint,
    name text NOT NULL,
    uuid text NOT NULL,
    power_state text NOT NULL,
    num_cpu bigint NOT NULL,
    memory_mb bigint NOT NULL,
    disk_gb double precision NOT NULL,
    guest_os text,
    ip_address text,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (id, vcenter_id)
) PARTITION BY HASH (vcenter_id);
