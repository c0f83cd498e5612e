# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A Django-like application's SQLite file: the sample source of the SQLite -> MariaDB path (the
staged migration service's runbook moves such an app from SQLite to MySQL).

  app_sample.py build --path FILE [--users 1000] [--orders 5000] [--force]
      writes a new file with Django's own tables as `manage.py migrate` makes them on SQLite
      (django_content_type, auth_group, auth_user, auth_user_groups - a many-to-many table with its
      own id and a unique pair) and a shop app (shop_product, shop_order, shop_orderitem): Django's
      SQLite column types (integer NOT NULL PRIMARY KEY AUTOINCREMENT, varchar(n), bool, datetime,
      decimal, text, a nullable foreign key), in WAL mode; prints a JSON summary. The rows are a
      function of their id: two builds are identical. Refuses to overwrite a file without --force.

Django stores datetimes as text ('YYYY-MM-DD HH:MM:SS.ffffff'), booleans as 0/1 in bool columns
and decimals in decimal columns (REAL or TEXT affinity by value): what a type mapping to MariaDB has
to handle (table_copy maps them to datetime(6), tinyint(1) and decimal).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import time

SCHEMA = """
CREATE TABLE "django_content_type" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT, "app_label" varchar(100) NOT NULL,
    "model" varchar(100) NOT NULL);
CREATE UNIQUE INDEX "django_content_type_app_label_model_76bd3d3b_uniq" ON "django_content_type" ("app_label", "model");
CREATE TABLE "auth_group" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT, "name" varchar(150) NOT NULL UNIQUE);
CREATE TABLE "auth_user" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT, "password" varchar(128) NOT NULL,
    "last_login" datetime NULL, "is_superuser" bool NOT NULL, "username" varchar(150) NOT NULL UNIQUE,
    "last_name" varchar(150) NOT NULL, "email" varchar(254) NOT NULL, "is_staff" bool NOT NULL, "is_active" bool NOT NULL,
    "date_joined" datetime NOT NULL, "first_name" varchar(150) NOT NULL);
CREATE TABLE "auth_user_groups" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT,
    "user_id" integer NOT NULL REFERENCES "auth_user" ("id") DEFERRABLE INITIALLY DEFERRED,
    "group_id" integer NOT NULL REFERENCES "auth_group" ("id") DEFERRABLE INITIALLY DEFERRED);
CREATE UNIQUE INDEX "auth_user_groups_user_id_group_id_94350c0c_uniq" ON "auth_user_groups" ("user_id", "group_id");
CREATE TABLE "shop_product" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT, "sku" varchar(32) NOT NULL UNIQUE,
    "name" varchar(200) NOT NULL, "description" text NOT NULL, "price" decimal NOT NULL, "active" bool NOT NULL,
    "created_at" datetime NOT NULL);
CREATE TABLE "shop_order" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT, "status" varchar(20) NOT NULL,
    "total" decimal NOT NULL, "placed_at" datetime NOT NULL, "shipped_at" datetime NULL, "note" text NULL,
    "customer_id" integer NULL REFERENCES "auth_user" ("id") DEFERRABLE INITIALLY DEFERRED);
CREATE TABLE "shop_orderitem" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT, "quantity" integer unsigned NOT NULL
    CHECK ("quantity" >= 0), "unit_price" decimal NOT NULL,
    "order_id" integer NOT NULL REFERENCES "shop_order" ("id") DEFERRABLE INITIALLY DEFERRED,
    "product_id" integer NOT NULL REFERENCES "shop_product" ("id") DEFERRABLE INITIALLY DEFERRED);
CREATE INDEX "shop_orderitem_order_id_2f1b00ce" ON "shop_orderitem" ("order_id");
"""
TABLES = ("django_content_type", "auth_group", "auth_user", "auth_user_groups", "shop_product", "shop_order", "shop_orderitem")
GROUPS = ("staff", "support", "finance", "customers")
STATUSES = ("new", "paid", "shipped", "cancelled")
EPOCH = 1_700_000_000
PRODUCTS = 200


def moment(seconds: int, micros: int = 0) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(EPOCH + seconds)) + f".{micros:06d}"


def build(path: str, users: int = 1000, orders: int = 5000, force: bool = False) -> dict:
    """Write the file at `path` (built beside it and renamed, so a half-built file never has its name)."""
    if os.path.exists(path) and not force:
        raise SystemExit(f"{path} exists: give --force to replace it")
    started = time.monotonic()
    partial = f"{path}.building"
    for stale in (partial, f"{partial}-wal", f"{partial}-shm"):
        if os.path.exists(stale):
            os.remove(stale)
    conn = sqlite3.connect(partial)
    conn.executescript(SCHEMA)
    conn.executemany(
        "INSERT INTO django_content_type VALUES (?, ?, ?)",
        [(1, "auth", "user"), (2, "auth", "group"), (3, "shop", "product"), (4, "shop", "order"), (5, "shop", "orderitem")],
    )
    conn.executemany("INSERT INTO auth_group VALUES (?, ?)", list(enumerate(GROUPS, 1)))
    conn.executemany(
        "INSERT INTO auth_user VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                n,
                f"pbkdf2_sha256$600000$salt{n}$hash{n:08d}",
                moment(n * 97, n % 1000) if n % 3 else None,  # a user who never logged in
                int(n == 1),
                f"user{n}",
                f"Lastname {n}",
                f"user{n}@example.org",
                int(n % 50 == 0),
                int(n % 17 != 0),
                moment(n * 61),
                "Zoë" if n % 11 == 0 else f"First{n}",
            )
            for n in range(1, users + 1)
        ],
    )
    conn.executemany("INSERT INTO auth_user_groups VALUES (?, ?, ?)", [(n, n, 1 + n % len(GROUPS)) for n in range(1, users + 1)])
    conn.executemany(
        "INSERT INTO shop_product VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (n, f"SKU-{n:05d}", f"Product {n}", f"Line one\nline two of product {n}", round(1 + n * 1.25, 2), int(n % 9 != 0), moment(n))
            for n in range(1, PRODUCTS + 1)
        ],
    )
    items, item_id = [], 0
    order_rows = []
    for n in range(1, orders + 1):
        lines = []
        for line in range(1 + n % 3):
            item_id += 1
            product = 1 + (n * 7 + line) % PRODUCTS
            price = round(1 + product * 1.25, 2)
            lines.append((item_id, 1 + (n + line) % 4, price, n, product))
        items.extend(lines)
        total = round(sum(quantity * price for _id, quantity, price, _order, _product in lines), 2)
        status = STATUSES[n % len(STATUSES)]
        shipped = moment(n * 13 + 86400) if status == "shipped" else None
        order_rows.append(
            (n, status, total, moment(n * 13, n % 997), shipped, None if n % 4 else f"note {n}", 1 + n % users if n % 10 else None)
        )
    conn.executemany("INSERT INTO shop_order VALUES (?, ?, ?, ?, ?, ?, ?)", order_rows)
    conn.executemany("INSERT INTO shop_orderitem VALUES (?, ?, ?, ?, ?)", items)
    conn.commit()
    conn.execute("PRAGMA journal_mode = WAL")
    counts = {table: conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0] for table in TABLES}  # noqa: S608 (own names)
    conn.close()
    os.replace(partial, path)
    return {"path": path, "rows": counts, "seconds": round(time.monotonic() - started, 2)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    built = commands.add_parser("build")
    built.add_argument("--path", required=True)
    built.add_argument("--users", type=int, default=1000)
    built.add_argument("--orders", type=int, default=5000)
    built.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    print(json.dumps(build(args.path, args.users, args.orders, args.force)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
