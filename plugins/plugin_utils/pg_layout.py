# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where roles/postgresql puts each instance and replica of a host, and what two of them would share.

pg_instance_layout(instances, replicas, ...)
    {name: {kind, name, port, data_dir, socket_dir, listen_addresses, ssl_cert_file, ssl_key_file,
    ssl_subject_alt_names}} for every instance and replica: what the role's tasks, templates and
    handlers read instead of deriving each path again.

pg_instance_conflicts(instances, replicas, ...)
    One sentence per pair of members that could not run side by side on one machine: the same
    name, data directory, unix socket (directory and port) or TCP address and port; each names
    both members and the fix. Empty when they can.

Several instances may share a port on one machine when each listens on its own address and has its
own socket directory: postgresql_socket_dir_per_instance puts the socket in
/var/run/postgresql/<name> (the directory pg_ctlcluster makes again after a reboot), and
postgresql_ssl_per_instance gives each its own certificate naming its own addresses.
"""

from __future__ import annotations

import ipaddress
import posixpath

SOCKET_DIR = "/var/run/postgresql"
# What a wildcard listen address binds: *4 every IPv4 address, *6 every IPv6 one (PostgreSQL binds
# its IPv6 sockets IPV6_V6ONLY). Read from the configuration, never bound here.
WILDCARDS = {"*": ("*4", "*6"), "0.0.0.0": ("*4",), "::": ("*6",)}  # noqa: S104
LOCALHOST = ("127.0.0.1", "::1")


def per_instance_path(path: str, name: str) -> str:
    """`/etc/x/postgresql.crt` -> `/etc/x/postgresql-NAME.crt` (the name before the extension)."""
    directory, base = posixpath.split(path)
    stem, extension = posixpath.splitext(base)
    return posixpath.join(directory, f"{stem or base}-{name}{extension}")


def split_addresses(listen_addresses) -> list[str]:
    """listen_addresses as PostgreSQL reads it: comma-separated, blanks ignored."""
    return [address.strip() for address in str(listen_addresses or "").split(",") if address.strip()]


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def subject_alt_names(listen_addresses) -> list[str] | None:
    """The SANs a certificate of an instance listening there needs for sslmode=verify-full, or None
    for a wildcard (every address of the host: the certificate's default names then)."""
    names: list[str] = []
    for text in split_addresses(listen_addresses):
        if text in WILDCARDS:
            return None
        if text.lower() == "localhost":
            names += ["DNS:localhost", *(f"IP:{address}" for address in LOCALHOST)]
            continue
        address = _address(text)
        names.append(f"IP:{address}" if address is not None else f"DNS:{text.lower()}")
    return list(dict.fromkeys(names)) or None


def _endpoints(listen_addresses) -> set[str]:
    """What a listen_addresses binds: addresses, host names (compared as written), *4 / *6 for every IPv4 / IPv6 address."""
    bound: set[str] = set()
    for text in split_addresses(listen_addresses):
        if text in WILDCARDS:
            bound.update(WILDCARDS[text])
        elif text.lower() == "localhost":
            bound.update(LOCALHOST)
        else:
            address = _address(text)
            bound.add(str(address) if address is not None else text.lower())
    return bound


def _covers(wildcard: str, item: str) -> bool:
    """Whether *4 / *6 binds `item` too: an address of its family, or a host name (its family unknown)."""
    address = _address(item)
    return address is None or address.version == int(wildcard[1])


def _overlap(first: set[str], second: set[str]) -> list[str]:
    """The endpoints both would bind, as written for a message."""
    labels = {"*4": "every IPv4 address", "*6": "every IPv6 address"}
    shared = []
    for one in sorted(first):
        for other in sorted(second):
            if one == other:
                shared.append(labels.get(one, one))
            elif one in labels and other not in labels and _covers(one, other):
                shared.append(other)
            elif other in labels and one not in labels and _covers(other, one):
                shared.append(one)
    return list(dict.fromkeys(shared))


def _members(instances, replicas) -> list[tuple[str, dict]]:
    return [("instance", dict(item)) for item in instances or []] + [("replica", dict(item)) for item in replicas or []]


def pg_instance_layout(
    instances,
    replicas=None,
    version=15,
    listen_addresses="localhost",
    socket_dir_per_instance=False,
    ssl_cert_file="",
    ssl_key_file="",
    ssl_per_instance=False,
) -> dict:
    """Every instance's and replica's paths and addresses, by name (see the module's docstring)."""
    layout = {}
    for kind, member in _members(instances, replicas):
        name = str(member["name"])
        listen = member.get("listen_addresses", listen_addresses)
        per_instance_tls = bool(ssl_per_instance) and bool(ssl_cert_file) and bool(ssl_key_file)
        layout[name] = {
            "kind": kind,
            "name": name,
            "port": int(member["port"]),
            "data_dir": member.get("data_dir") or f"/var/lib/postgresql/{version}/{name}",
            "socket_dir": member.get("socket_dir") or (posixpath.join(SOCKET_DIR, name) if socket_dir_per_instance else SOCKET_DIR),
            "listen_addresses": listen,
            "ssl_cert_file": per_instance_path(ssl_cert_file, name) if per_instance_tls else ssl_cert_file,
            "ssl_key_file": per_instance_path(ssl_key_file, name) if per_instance_tls else ssl_key_file,
            # None: the lab CA's default names (one certificate for the host, as before)
            "ssl_subject_alt_names": subject_alt_names(listen) if per_instance_tls else None,
        }
        if kind == "replica":
            primary = dict(member.get("replica_of") or {})
            local = layout.get(str(primary.get("name", "")))
            local = local if local and local["kind"] == "instance" else None
            layout[name]["primary_host"] = primary.get("host") or (connect_address(local["listen_addresses"]) if local else "127.0.0.1")
            layout[name]["primary_port"] = primary.get("port") or (local["port"] if local else None)
    return layout


def connect_address(listen_addresses) -> str:
    """Where a client of this machine reaches a server listening there: its first address that is not
    a wildcard (localhost as 127.0.0.1), else 127.0.0.1."""
    for text in split_addresses(listen_addresses):
        if text not in WILDCARDS:
            return "127.0.0.1" if text.lower() == "localhost" else text
    return "127.0.0.1"


def pg_instance_conflicts(instances, replicas=None, **layout_options) -> list[str]:
    """What two members of one host would share (see the module's docstring); [] when nothing."""
    members = _members(instances, replicas)
    problems = []
    seen: dict[str, str] = {}
    for kind, member in members:
        name = str(member.get("name"))
        if name in seen:
            problems.append(
                f"{seen[name]} {name} and {kind} {name} have the same name: an instance's name keeps its "
                "configuration, data, socket, pid file and log apart; rename one."
            )
        seen.setdefault(name, kind)
    layout = [
        pg_instance_layout(*(([member], []) if kind == "instance" else ([], [member])), **layout_options)[str(member["name"])]
        for kind, member in members
    ]
    for index, first in enumerate(layout):
        for second in layout[index + 1 :]:
            pair = f"{first['kind']} {first['name']} and {second['kind']} {second['name']}"
            if first["name"] == second["name"]:
                continue
            if first["data_dir"] == second["data_dir"]:
                problems.append(f"{pair} would share the data directory {first['data_dir']}: give each its own data_dir.")
            if first["port"] != second["port"]:
                continue
            if first["socket_dir"] == second["socket_dir"]:
                problems.append(
                    f"{pair} would share the unix socket {first['socket_dir']}/.s.PGSQL.{first['port']}: give each its own "
                    "socket directory (postgresql_socket_dir_per_instance: true, or socket_dir on one of them) or its own port."
                )
            shared = _overlap(_endpoints(first["listen_addresses"]), _endpoints(second["listen_addresses"]))
            if shared:
                problems.append(
                    f"{pair} would both listen on port {first['port']} of {', '.join(shared)}: give each its own address "
                    "(listen_addresses) or its own port."
                )
    return problems


def pg_instance_certificates(layout: dict) -> list[dict]:
    """The certificates a layout's members use, one per file: {cert_file, key_file, members,
    subject_alt_names (None: the issuer's default names)}, in the members' order."""
    certificates: dict[str, dict] = {}
    for member in layout.values():
        certificate = certificates.setdefault(
            member["ssl_cert_file"],
            {"cert_file": member["ssl_cert_file"], "key_file": member["ssl_key_file"], "members": [], "subject_alt_names": []},
        )
        certificate["members"].append(member["name"])
        names = member["ssl_subject_alt_names"]
        if names is None or certificate["subject_alt_names"] is None:
            certificate["subject_alt_names"] = None
        else:
            certificate["subject_alt_names"] = list(dict.fromkeys(certificate["subject_alt_names"] + names))
    return list(certificates.values())
