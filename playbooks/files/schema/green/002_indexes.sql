-- Indexes on the partitioned parents: every partition, present and future, gets them.
CREATE INDEX vms_id_idx ON vms (id);
CREATE INDEX vms_vcenter_id_state_idx ON vms (vcenter_id, state);
CREATE INDEX vm_metrics_vm_id_collected_at_idx ON vm_metrics (vm_id, collected_at);
CREATE INDEX users_tenant_id_idx ON users (tenant_id);
