# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A logical replication publication as a ManagedObject.

Every attribute is read back from the catalogs and compared after normalisation (tables as
schema-qualified names, `public` when no schema is given; publish actions in PostgreSQL's
order), so only what differs is altered. Table membership is exact: tables are added and
dropped with ONLY, so an inheritance child is a member only when it is listed itself.
Switching between FOR ALL TABLES and a table/schema list cannot be done with ALTER; with
`recreate` it is a DROP and CREATE in the same transaction.
"""

from __future__ import annotations

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.managed import ManagedObject
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import PgError, ident, sql
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.identifiers import (
    DEFAULT_SCHEMA,
    check_identifier,
    format_qualified_name,
    split_qualified_name,
)

PUBLISH_ACTIONS = ("insert", "update", "delete", "truncate")


def normalise_tables(tables) -> list[str] | None:
    """The tables option as sorted, de-duplicated qualified names (None stays None: "any")."""
    if tables is None:
        return None
    return sorted({format_qualified_name(*split_qualified_name(table)) for table in tables})


def normalise_publish(actions) -> list[str]:
    """Publish actions in PostgreSQL's order, each once; unknown ones are an error."""
    unknown = sorted(set(actions) - set(PUBLISH_ACTIONS))
    if unknown:
        raise PgError(f"unknown publish action(s): {', '.join(unknown)}: choose from {', '.join(PUBLISH_ACTIONS)}")
    return [action for action in PUBLISH_ACTIONS if action in actions]


def publication_desired(params: dict) -> dict:
    """The attributes the module asks for; None means "leave as it is"."""
    all_tables = params.get("all_tables")
    tables = normalise_tables(params.get("tables"))
    schemas = params.get("schemas")
    if schemas is not None:
        schemas = sorted({check_identifier(schema, "schema") for schema in schemas})
    if all_tables and (tables or schemas):
        raise PgError("all_tables: true publishes every table: drop 'tables' and 'schemas', or set all_tables: false")
    if all_tables is None and (tables is not None or schemas is not None):
        all_tables = False  # a table or schema list is not FOR ALL TABLES
    publish = params.get("publish")
    owner = params.get("owner")
    return {
        "all_tables": all_tables,
        "tables": None if all_tables else tables,
        "schemas": None if all_tables else schemas,
        "publish": None if publish is None else normalise_publish(publish),
        "publish_via_partition_root": params.get("publish_via_partition_root"),
        "owner": None if owner is None else check_identifier(owner, "owner"),
    }


class Publication(ManagedObject):
    kind = "publication"

    def __init__(self, client, name: str, recreate: bool = False):
        super().__init__(client, check_identifier(name, "publication name"))
        self.recreate = recreate

    # Reading ------------------------------------------------------------------------------
    def row(self) -> dict | None:
        return self.client.query_one(
            "SELECT p.oid, p.puballtables, p.pubinsert, p.pubupdate, p.pubdelete, p.pubtruncate, p.pubviaroot, "
            "pg_catalog.pg_get_userbyid(p.pubowner) AS owner FROM pg_catalog.pg_publication p WHERE p.pubname = %s",
            (self.name,),
        )

    def exists(self) -> bool:
        return self.row() is not None

    def attrs(self) -> dict | None:
        row = self.row()
        if row is None:
            return None
        tables = self.client.query(
            "SELECT n.nspname, c.relname FROM pg_catalog.pg_publication_rel r "
            "JOIN pg_catalog.pg_class c ON c.oid = r.prrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "WHERE r.prpubid = %s",
            (row["oid"],),
        )
        schemas = []
        if self.client.server_version[0] >= 15:
            schemas = self.client.query(
                "SELECT n.nspname FROM pg_catalog.pg_publication_namespace pn "
                "JOIN pg_catalog.pg_namespace n ON n.oid = pn.pnnspid WHERE pn.pnpubid = %s",
                (row["oid"],),
            )
        return {
            "all_tables": row["puballtables"],
            "tables": sorted(format_qualified_name(t["nspname"], t["relname"]) for t in tables),
            "schemas": sorted(s["nspname"] for s in schemas),
            "publish": [action for action in PUBLISH_ACTIONS if row[f"pub{action}"]],
            "publish_via_partition_root": row["pubviaroot"],
            "owner": row["owner"],
        }

    # Checks before changing anything ------------------------------------------------------
    def check_tables(self, tables) -> None:
        """Every listed table exists and is a table (plain or partitioned)."""
        missing, not_tables = [], []
        for name in tables:
            schema, table = split_qualified_name(name)
            row = self.client.query_one(
                "SELECT c.relkind FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relname = %s",
                (schema, table),
            )
            if row is None:
                missing.append(name)
            elif row["relkind"] not in ("r", "p"):
                not_tables.append(name)
        database = self.client.conn.info.dbname
        if missing:
            raise PgError(
                f"table(s) not found in database '{database}' on {self.client.endpoint}: {', '.join(missing)}: "
                f"create them first or fix 'tables' (a name without a schema means {DEFAULT_SCHEMA}.<name>)"
            )
        if not_tables:
            raise PgError(
                f"not a table in database '{database}' on {self.client.endpoint}: {', '.join(not_tables)}: "
                f"only tables and partitioned tables can be published; remove them from 'tables'"
            )

    def check_schemas(self, schemas) -> None:
        if not schemas:
            return
        self.client.require_version(15, "publishing TABLES IN SCHEMA ('schemas')")
        found = {
            row["nspname"]
            for row in self.client.query("SELECT nspname FROM pg_catalog.pg_namespace WHERE nspname = ANY(%s)", (list(schemas),))
        }
        missing = [schema for schema in schemas if schema not in found]
        if missing:
            raise PgError(
                f"schema(s) not found in database '{self.client.conn.info.dbname}' on {self.client.endpoint}: "
                f"{', '.join(missing)}: create them first or fix 'schemas'"
            )

    def check_owner(self, owner) -> None:
        if owner is not None and self.client.query_one("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s", (owner,)) is None:
            raise PgError(f"role '{owner}' does not exist on {self.client.endpoint}: create it first or fix 'owner'")

    # Changing -----------------------------------------------------------------------------
    def check(self, desired: dict) -> None:
        self.client.require_logical_wal()
        self.check_tables(desired.get("tables") or [])
        self.check_schemas(desired.get("schemas") or [])
        self.check_owner(desired.get("owner"))

    def create(self, desired: dict) -> None:
        self.check(desired)
        targets = []
        if desired.get("all_tables"):
            targets = [sql.SQL("ALL TABLES")]
        else:
            if desired.get("tables"):
                targets.append(sql.SQL("TABLE ") + sql.SQL(", ").join(self.only(desired["tables"])))
            if desired.get("schemas"):
                targets.append(sql.SQL("TABLES IN SCHEMA ") + sql.SQL(", ").join(ident(s) for s in desired["schemas"]))
        publish = desired.get("publish")
        options = [sql.SQL("publish = {}").format(sql.Literal(", ".join(PUBLISH_ACTIONS if publish is None else publish)))]
        if desired.get("publish_via_partition_root") is not None:
            options.append(sql.SQL("publish_via_partition_root = {}").format(sql.Literal(bool(desired["publish_via_partition_root"]))))
        statement = sql.SQL("CREATE PUBLICATION {}").format(ident(self.name))
        if targets:
            statement += sql.SQL(" FOR ") + sql.SQL(", ").join(targets)
        statement += sql.SQL(" WITH ({})").format(sql.SQL(", ").join(options))
        self.client.execute(statement)
        owner = desired.get("owner")
        if owner is not None and owner != self.current_user():
            self.alter(sql.SQL("OWNER TO {}").format(ident(owner)))

    def current_user(self) -> str:
        return self.client.query_one("SELECT current_user AS name")["name"]

    def alter(self, clause) -> None:
        self.client.execute(sql.SQL("ALTER PUBLICATION {} ").format(ident(self.name)) + clause)

    def update(self, current: dict, changes: dict) -> None:
        if "all_tables" in changes:
            self.switch(current, changes)
            return
        tables = self.list_changes(current, changes, "tables")
        schemas = self.list_changes(current, changes, "schemas")
        # Every check before the first statement: a bad name changes nothing, in check mode too.
        self.check_tables(tables["add"])
        self.check_schemas(schemas["add"])
        self.check_owner(changes.get("owner"))
        # Drops first: a table can then move into a schema listed in the same run.
        if tables["drop"]:
            self.alter(sql.SQL("DROP TABLE ") + sql.SQL(", ").join(self.only(tables["drop"])))
        if schemas["drop"]:
            self.alter(sql.SQL("DROP TABLES IN SCHEMA ") + sql.SQL(", ").join(ident(s) for s in schemas["drop"]))
        if tables["add"]:
            self.alter(sql.SQL("ADD TABLE ") + sql.SQL(", ").join(self.only(tables["add"])))
        if schemas["add"]:
            self.alter(sql.SQL("ADD TABLES IN SCHEMA ") + sql.SQL(", ").join(ident(s) for s in schemas["add"]))
        if "publish" in changes:
            self.alter(sql.SQL("SET (publish = {})").format(sql.Literal(", ".join(changes["publish"]))))
        if "publish_via_partition_root" in changes:
            self.alter(sql.SQL("SET (publish_via_partition_root = {})").format(sql.Literal(bool(changes["publish_via_partition_root"]))))
        if "owner" in changes:
            self.alter(sql.SQL("OWNER TO {}").format(ident(changes["owner"])))

    @staticmethod
    def only(tables):
        return [sql.SQL("ONLY {}").format(ident(*split_qualified_name(t))) for t in tables]

    @staticmethod
    def list_changes(current, changes, key: str) -> dict:
        """What to add to and drop from the list `key` (tables, schemas); nothing when it is not asked for."""
        if key not in changes:
            return {"add": [], "drop": []}
        return {
            "add": [name for name in changes[key] if name not in current[key]],
            "drop": [name for name in current[key] if name not in changes[key]],
        }

    def switch(self, current: dict, changes: dict) -> None:
        """FOR ALL TABLES <-> a table/schema list: only by dropping and re-creating."""
        wanted = "FOR ALL TABLES" if changes["all_tables"] else "a table/schema list"
        found = "FOR ALL TABLES" if current["all_tables"] else "a table/schema list"
        if not self.recreate:
            raise PgError(
                f"publication '{self.name}' on {self.client.endpoint} is {found} and {wanted} was asked for: "
                f"ALTER PUBLICATION cannot switch between the two: set recreate: true to drop and re-create it "
                f"in one transaction (subscribers must then run ALTER SUBSCRIPTION ... REFRESH PUBLICATION)"
            )
        recreated = self.projected(current, changes)
        if changes["all_tables"]:
            recreated.update(tables=[], schemas=[])
        self.check(recreated)
        self.drop(current)
        self.create(recreated)

    def drop(self, current: dict) -> None:
        self.client.execute(sql.SQL("DROP PUBLICATION {}").format(ident(self.name)))


def ensure_publication(client, params: dict) -> dict:
    """What the pg_publication module does, given its parameters: all in one transaction."""
    publication = Publication(client, params["name"], recreate=params.get("recreate"))
    state = params.get("state", "present")
    desired = publication_desired(params) if state == "present" else {}
    with client.transaction():
        result = publication.ensure(state, desired)
        if result["state"] == "present":
            current = publication.attrs()
            result[publication.kind] = current if current is not None else dict(result["diff"]["after"])
    return result
