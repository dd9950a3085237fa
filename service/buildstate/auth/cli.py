"""``buildstate keys ...`` and ``buildstate users ...``: manage credentials without the server running.

They talk to ``BUILDSTATE_DATABASE_URL`` directly (applying pending migrations first), through the same
``accounts`` functions as the admin routes, so the rules and the audit rows are the same. The audit log
records the operating-system user as ``cli:<name>``.

``keys create`` prints the key alone on the last line of stdout (or, with ``--json``, one JSON object
holding it). Passwords come from ``--password`` (visible in the process list: prefer the others), from a
prompt on a terminal, or from the first line of standard input.
"""

# ruff: noqa: T201 - a console command talks on stdout
from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from typing import Any

from buildstate import console
from buildstate.auth import accounts
from buildstate.auth.models import ApiKeyInfo, CreatedKey, UserInfo
from buildstate.auth.scopes import KEY_SCOPES, ROLE_SCOPES
from buildstate.config import Settings
from buildstate.errors import Problem


def _read_password(given: str | None) -> str:
    if given is not None:
        return given
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise SystemExit("buildstate: the two passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


# ---------------------------------------------------------------- keys


def _keys_create(settings: Settings, args: argparse.Namespace) -> int:
    try:
        key, record = console.run(
            settings,
            lambda store: accounts.create_api_key(
                store,
                name=args.name,
                scopes=args.scopes,
                platforms=args.platforms,
                expires_in_days=args.expires_in_days,
                ctx=console.operator(),
            ),
        )
    except Problem as problem:
        return console.fail(problem)
    info = ApiKeyInfo.of(record)
    if args.json:
        console.print_json(CreatedKey(**info.model_dump(), key=key).model_dump(mode="json"))
        return 0
    platforms = ", ".join(info.platforms) if info.platforms else "all platforms"
    print(f"created API key {info.id} ({info.name!r}): scopes {' '.join(info.scopes)}; {platforms}; ", end="")
    print(f"expires {console.when(info.expires_at)}" if info.expires_at else "no expiry")
    print("Store it now (it is shown only this once) and send it as the X-API-Key header:")
    print(key)
    return 0


def _keys_list(settings: Settings, args: argparse.Namespace) -> int:
    records = console.run(settings, lambda store: store.access.list_keys(include_revoked=args.all))
    infos = [ApiKeyInfo.of(r) for r in records]
    if args.json:
        console.print_json([info.model_dump(mode="json") for info in infos])
        return 0
    print(f"{'ID':<12} {'NAME':<24} {'SCOPES':<18} {'PLATFORMS':<16} {'EXPIRES':<16} {'LAST USED':<16} STATE")
    for info in infos:
        state = "revoked" if info.revoked_at else ("active" if info.active else "expired")
        print(
            f"{info.id:<12} {info.name[:24]:<24} {','.join(info.scopes):<18} "
            f"{','.join(info.platforms or ['*'])[:16]:<16} {console.when(info.expires_at):<16} "
            f"{console.when(info.last_used_at):<16} {state}"
        )
    return 0


def _keys_revoke(settings: Settings, args: argparse.Namespace) -> int:
    try:
        key_id = accounts.check_key_id(args.key_id)
        record = console.run(settings, lambda store: store.access.revoke_key(key_id, console.operator()))
    except Problem as problem:
        return console.fail(problem)
    print(f"revoked {record.prefix} ({record.name!r}) at {console.when(record.revoked_at)}")
    return 0


# ---------------------------------------------------------------- users


def _users_create(settings: Settings, args: argparse.Namespace) -> int:
    password = _read_password(args.password)
    try:
        record = console.run(
            settings,
            lambda store: accounts.create_user(
                store, username=args.username, role=args.role, password=password, ctx=console.operator()
            ),
        )
    except Problem as problem:
        return console.fail(problem)
    print(f"created user {record.username} ({record.role})")
    return 0


def _users_list(settings: Settings, args: argparse.Namespace) -> int:
    infos = [UserInfo.of(r) for r in console.run(settings, lambda store: store.access.list_users())]
    if args.json:
        console.print_json([info.model_dump(mode="json") for info in infos])
        return 0
    print(f"{'USERNAME':<24} {'ROLE':<10} {'CREATED':<16} {'PASSWORD SET':<16} STATE")
    for info in infos:
        state = "disabled" if info.disabled else "active"
        print(
            f"{info.username:<24} {info.role:<10} {console.when(info.created_at):<16} "
            f"{console.when(info.password_changed_at):<16} {state}"
        )
    return 0


def _users_set_disabled(disabled: bool) -> Callable[[Settings, argparse.Namespace], int]:
    def command(settings: Settings, args: argparse.Namespace) -> int:
        try:
            record = console.run(
                settings,
                lambda store: accounts.set_disabled(
                    store, username=args.username, disabled=disabled, ctx=console.operator()
                ),
            )
        except Problem as problem:
            return console.fail(problem)
        print(f"{'disabled' if record.disabled_at else 'enabled'} user {record.username}")
        return 0

    return command


def _users_passwd(settings: Settings, args: argparse.Namespace) -> int:
    password = _read_password(args.password)
    try:
        record = console.run(
            settings,
            lambda store: accounts.change_password(
                store, username=args.username, password=password, ctx=console.operator()
            ),
        )
    except Problem as problem:
        return console.fail(problem)
    print(f"changed the password of {record.username}; tokens issued before no longer work")
    return 0


# ---------------------------------------------------------------- parser


def add_commands(commands: Any) -> None:
    """Add ``keys`` and ``users`` to the ``buildstate`` command's subparsers."""
    keys = commands.add_parser(
        "keys",
        help="manage API keys (for pipelines)",
        description="Create, list and revoke API keys in BUILDSTATE_DATABASE_URL; the server need not run.",
    )
    key_actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")

    create = key_actions.add_parser(
        "create", help="create a key and print it (once)", description="The key is the last line of output."
    )
    create.add_argument("--name", required=True, help="what the key is for, e.g. the pipeline's name")
    create.add_argument(
        "--scope",
        dest="scopes",
        action="append",
        required=True,
        choices=KEY_SCOPES,
        help="repeat for several: read (GETs), write (create/state/failure/reset), admin (everything)",
    )
    create.add_argument(
        "--platform", dest="platforms", action="append", help="only builds on this platform (repeatable)"
    )
    create.add_argument("--expires-in-days", type=int, help="1 to 3650; default: no expiry")
    create.add_argument("--json", action="store_true", help="print one JSON object (with the key) instead")
    create.set_defaults(run=_keys_create)

    listing = key_actions.add_parser("list", help="list keys (never the keys themselves)")
    listing.add_argument("--all", action="store_true", help="include revoked keys")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=_keys_list)

    revoke = key_actions.add_parser("revoke", help="revoke a key: refused at once everywhere")
    revoke.add_argument("key_id", help="the key's id, bs_ and 8 hex digits (see `keys list`)")
    revoke.set_defaults(run=_keys_revoke)

    users = commands.add_parser(
        "users",
        help="manage users (for people and dashboards)",
        description="Users sign in at POST /token. Roles: viewer (read), "
        "operator (read, write, reset, release), admin (everything).",
    )
    user_actions = users.add_subparsers(dest="action", required=True, metavar="ACTION")
    entry_help = "the password (visible to other local users in the process list); default: prompt, or stdin"

    ucreate = user_actions.add_parser("create", help="create a user")
    ucreate.add_argument("--username", required=True)
    ucreate.add_argument("--role", required=True, choices=list(ROLE_SCOPES))
    ucreate.add_argument("--password", help=entry_help)
    ucreate.set_defaults(run=_users_create)

    ulist = user_actions.add_parser("list", help="list users")
    ulist.add_argument("--json", action="store_true")
    ulist.set_defaults(run=_users_list)

    disable = user_actions.add_parser("disable", help="disable a user: their tokens stop working at once")
    disable.add_argument("username")
    disable.set_defaults(run=_users_set_disabled(True))

    enable = user_actions.add_parser("enable", help="enable a disabled user")
    enable.add_argument("username")
    enable.set_defaults(run=_users_set_disabled(False))

    passwd = user_actions.add_parser("passwd", help="set a user's password")
    passwd.add_argument("username")
    passwd.add_argument("--password", help=entry_help)
    passwd.set_defaults(run=_users_passwd)
