#!/usr/bin/python
# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: pg_index
short_description: Build or drop a PostgreSQL index on a live table without blocking writes
description:
  - Makes sure an index exists (or does not) on a table of the database the module connects to (O(login_db)).
  - Builds with C(CREATE INDEX CONCURRENTLY) (outside a transaction block), so inserts, updates and deletes go on
    while the index is built. A concurrent build waits for transactions already open on the table to finish;
    O(lock_timeout) bounds each such wait, O(timeout) bounds the build.
  - An existing valid index with the same name and the same definition is left alone (C(changed=false)).
    Definitions are compared as the server reads them back (key and C(INCLUDE) columns, operator classes,
    collations, sort order, access method, uniqueness, predicate); the wanted definition is normalised by
    building it on an empty temporary copy of the table, in a transaction that is always rolled back, so a
    wrong column or expression fails before anything changes, in check mode too.
  - An index with the same name but another definition, or on another table, is an error naming both
    definitions; it is never replaced silently. Drop it (O(state=absent)) or choose another name.
  - An B(invalid) index with the wanted definition (left behind by an interrupted C(CREATE INDEX CONCURRENTLY), with
    C(pg_index.indisvalid) or C(indisready) false) is dropped with C(DROP INDEX CONCURRENTLY) and built again;
    the result says RV(rebuilt=true). A build that fails drops the invalid index it left behind.
  - On a B(partitioned table) PostgreSQL cannot build an index concurrently, so the module does what the
    PostgreSQL documentation describes for that case. It creates the index C(ON ONLY) the parent (no data, so
    instantaneous; it stays invalid until every partition has its index attached). Then, for each partition,
    it builds an index named C(<partition>_<index>) (cut to 63 bytes with a short hash when longer)
    concurrently, unless a matching one is attached already or exists already, and attaches it with
    C(ALTER INDEX ... ATTACH PARTITION). The parent index becomes valid when the last partition index is attached.
    Sub-partitioned partitions get a partitioned index of their own, handled the same way. A run that was
    interrupted resumes where it stopped.
version_added: 0.1.0
author:
  - zerodowntime.migration maintainers (@zerodowntime)
options:
  name:
    description:
      - Name of the index, without a schema; the index is always in the schema of O(table).
      - Taken literally (no case folding), at most 63 bytes.
    type: str
    required: true
  table:
    description:
      - The table, C(name) or C(schema.name); a name without a schema means C(public.<name>).
      - Names are taken literally (no case folding); double-quote a part that contains a dot.
      - A plain table, a partitioned table or a materialized view.
    type: str
    required: true
  columns:
    description:
      - The key columns, in order. Required with O(state=present).
      - An entry without C(() is a column name, quoted as an identifier (C(Email) means the column C("Email")).
      - An entry containing C(() is an B(expression) and is passed to PostgreSQL as SQL, unquoted, for example
        V(lower(email\)), V((price * quantity\)) or V(lower(email\) text_pattern_ops). Write a bare expression that is
        not a function call in parentheses, as PostgreSQL requires. This is trusted SQL, written by the playbook
        author; never build it from untrusted input.
      - An expression is one expression - a C(;) outside quotes and comments is refused with an error before
        anything runs (check mode too), and the statement built from it is parsed by the server as one command
        (without running it) before the trial build, so no field can add a statement.
    type: list
    elements: str
  unique:
    description:
      - Create a C(UNIQUE) index. On a partitioned table it must include the partition key columns.
    type: bool
    default: false
  method:
    description:
      - Index access method.
    type: str
    choices: [btree, hash, gin, gist, brin]
    default: btree
  include:
    description:
      - Non-key columns stored in the index (C(INCLUDE)), column names only. Supported by btree and gist (and spgist).
    type: list
    elements: str
  where:
    description:
      - Predicate of a partial index, as SQL (for example C(deleted_at IS NULL)). Trusted SQL written by the playbook
        author, passed to PostgreSQL unquoted; never build it from untrusted input.
      - One boolean expression - a C(;) outside quotes and comments is refused with an error naming the field, and
        the statement is parsed by the server as one command before anything runs, as for expressions in O(columns).
    type: str
  concurrently:
    description:
      - Build with C(CREATE INDEX CONCURRENTLY) and drop with C(DROP INDEX CONCURRENTLY), so writes are not blocked.
      - V(false) builds with a plain C(CREATE INDEX), which blocks writes to the table for the whole build
        (only for a maintenance window, or a table nothing writes to).
      - The index C(ON ONLY) a partitioned parent and its C(ATTACH PARTITION) are never concurrent (PostgreSQL
        does not support it there); they take short locks only, bounded by O(lock_timeout).
    type: bool
    default: true
  state:
    description:
      - V(present) builds the index when it is missing or invalid; V(absent) drops it when it exists.
      - V(absent) runs C(DROP INDEX CONCURRENTLY IF EXISTS). The index of a partitioned table is dropped with a plain
        C(DROP INDEX), because PostgreSQL cannot drop a partitioned index concurrently and the partitions' indexes
        cannot be dropped separately while attached; it takes an C(ACCESS EXCLUSIVE) lock on the table and its
        partitions for the moment the drop lasts (no data is read), bounded by O(lock_timeout).
    type: str
    choices: [present, absent]
    default: present
  timeout:
    description:
      - Seconds each statement may run (C(statement_timeout)), bounding the build; with partitions, each partition's
        build separately. V(0) (the default) sets no bound.
      - A build cancelled by the timeout leaves an invalid index, which the module drops before failing.
    type: float
    default: 0
  lock_timeout:
    description:
      - Seconds to wait for a lock (C(lock_timeout)). A concurrent build or drop waits for the transactions that were
        open on the table when it started, and C(ON ONLY), C(ATTACH PARTITION) and a plain C(DROP INDEX) need a lock on
        the table; a long-running transaction then makes the module fail after this long instead of waiting (and
        making other sessions queue behind it). V(0) waits forever.
    type: float
    default: 5
extends_documentation_fragment:
  - zerodowntime.migration.postgres
  - zerodowntime.migration.progress
attributes:
  check_mode:
    support: full
    description:
      - Reports what would change and the statements that would run, without building, attaching or dropping anything.
        The wanted definition is still checked on an empty temporary copy of the table (rolled back).
  diff_mode:
    support: full
    description: Shows the index (columns, method, uniqueness, predicate, validity, definition) before and after.
notes:
  - The role connecting needs to own the table (or be a superuser), and the C(TEMPORARY) privilege on the database
    for the definition check.
  - On a partitioned table only the index named C(<partition>_<index>) is considered for each partition; another
    matching index of another name is not reused.
  - A partition index that is attached but invalid cannot be repaired in place (PostgreSQL does not validate the parent
    again); the module fails and says to drop the parent index and run again.
"""

EXAMPLES = r"""
- name: Index orders by customer on green without blocking writes
  zerodowntime.migration.pg_index:
    login_host: 127.0.0.12
    login_port: 5432
    name: orders_customer_id_idx
    table: public.orders
    columns: [customer_id, created_at]
    include: [status]
    timeout: 3600

- name: Case-insensitive unique e-mail, only for live accounts (an expression and a predicate)
  zerodowntime.migration.pg_index:
    login_host: 127.0.0.12
    login_port: 5432
    name: accounts_email_key
    table: accounts
    columns: ["lower(email)"]
    unique: true
    where: deleted_at IS NULL

- name: GIN index on a hash-partitioned table (built partition by partition)
  zerodowntime.migration.pg_index:
    login_host: 127.0.0.12
    login_port: 5432
    name: events_payload_idx
    table: events
    columns: [payload]
    method: gin
  register: events_index

- name: Drop an index that is no longer used
  zerodowntime.migration.pg_index:
    login_host: 127.0.0.12
    login_port: 5432
    name: orders_legacy_idx
    table: orders
    state: absent
"""

RETURN = r"""
state:
  description:
    - Whether the index O(name) on O(table) exists after the run (in check mode, whether it would) -
      V(present) or V(absent).
    - RV(index) is its definition as the server reports it.
  returned: success
  type: str
  sample: present
index:
  description:
    - The index as the server reports it; empty when it does not exist.
    - In check mode, an index that would be built shows the definition the server would give it.
  returned: success
  type: dict
  contains:
    name:
      description: Name of the index.
      type: str
      sample: orders_customer_id_idx
    table:
      description: Its table, C(schema.table).
      type: str
      sample: public.orders
    columns:
      description: Key columns and expressions, as PostgreSQL prints them (V(lower(email\)) may read V(lower(email::text\))).
      type: list
      elements: str
      sample: [customer_id, created_at]
    unique:
      description: Whether it is a unique index.
      type: bool
      sample: false
    method:
      description: Access method.
      type: str
      sample: btree
    include:
      description: C(INCLUDE) columns.
      type: list
      elements: str
      sample: [status]
    where:
      description: Predicate of a partial index, as PostgreSQL prints it; null for a full index.
      type: str
      sample: deleted_at IS NULL
    valid:
      description: Whether the index is valid and ready (C(indisvalid), C(indisready), C(indislive)).
      type: bool
      sample: true
    definition:
      description: C(pg_get_indexdef) of the index.
      type: str
      sample: CREATE INDEX orders_customer_id_idx ON public.orders USING btree (customer_id, created_at) INCLUDE (status)
rebuilt:
  description:
    - Whether an invalid index (the index itself, or the index of a partition) was dropped and built again.
  returned: always
  type: bool
  sample: false
partitions:
  description:
    - For a partitioned table, each partition's index; empty for other tables. On failure, the ones handled so far.
  returned: always
  type: list
  elements: dict
  contains:
    partition:
      description: The partition, C(schema.table).
      type: str
      sample: public.events_p0
    index:
      description: Name of its index (in the partition's schema).
      type: str
      sample: events_p0_events_payload_idx
    parent_index:
      description: The partitioned index it is attached to, C(schema.name).
      type: str
      sample: public.events_payload_idx
    created:
      description: Whether this run built it (in check mode, would build).
      type: bool
      sample: true
    attached:
      description: Whether this run attached it (false when it was attached already).
      type: bool
      sample: true
    rebuilt:
      description: Whether this run dropped an invalid index of that name and built it again.
      type: bool
      sample: false
  sample: [{"partition": "public.events_p0", "index": "events_p0_events_payload_idx", "parent_index": "public.events_payload_idx",
            "created": true, "attached": true, "rebuilt": false}]
queries:
  description: Statements that changed something (in check mode, that would have), in order.
  returned: always
  type: list
  elements: str
  sample: ['CREATE INDEX CONCURRENTLY "orders_customer_id_idx" ON "public"."orders" USING btree ("customer_id", "created_at")']
diff:
  description: The index before and after (valid false to true when an invalid index is rebuilt).
  returned: success
  type: dict
  sample: {"before": {}, "after": {"name": "orders_customer_id_idx", "valid": true}}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.index import METHODS, ensure_index
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.module import pg_argument_spec, run
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.progress import PROGRESS_SPEC


def main():
    module = AnsibleModule(
        argument_spec=pg_argument_spec(
            name=dict(type="str", required=True),
            table=dict(type="str", required=True),
            columns=dict(type="list", elements="str"),
            unique=dict(type="bool", default=False),
            method=dict(type="str", choices=list(METHODS), default="btree"),
            include=dict(type="list", elements="str"),
            where=dict(type="str"),
            concurrently=dict(type="bool", default=True),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            timeout=dict(type="float", default=0.0),
            lock_timeout=dict(type="float", default=5.0),
            progress=PROGRESS_SPEC,
        ),
        required_if=[("state", "present", ["columns"])],
        supports_check_mode=True,
    )
    run(module, lambda client: ensure_index(client, module.params))


if __name__ == "__main__":
    main()
