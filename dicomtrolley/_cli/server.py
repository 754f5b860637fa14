"""The server a command talks to: a URL, a named server, or a DIMSE address, with the options on top.

What a protocol needs and the command line lacks (C-FIND without ``--host``)
is a :class:`~dicomtrolley._cli.exits.UsageError` naming the options to add,
found before anything is sent. A DICOMweb URL is needed only by the protocols
that use one: MINT with RAD-69, or C-FIND with C-GET, take none.
"""

from __future__ import annotations

import argparse
from typing import Any

from pydantic import ValidationError

from dicomtrolley._cli.exits import UsageError
from dicomtrolley._cli.options import http_url
from dicomtrolley.deidentify import Deidentifier
from dicomtrolley.profiles import ServerProfile, load_profile, required_settings

_SETTINGS = ("searcher", "downloader", "wado_uri_url", "mint_url", "rad69_url", "workers", "max_connections", "user",
             "login_url", "ca_file", "host", "port", "aet", "aec", "move_port")
"""The options that override a profile's settings of the same name."""

_OPTION_FOR = {"url": "a URL", "host": "--host", "port": "--port", "move_port": "--move-port",
               "mint_url": "--mint-url", "rad69_url": "--rad69-url"}
"""How the command line gives each setting a protocol may need."""


def positionals(args: argparse.Namespace, *given: str | None) -> list[str]:
    """The command's positionals in the order given, the server's URL taken out of them into ``args.url``.

    Argparse fills ``url`` and the command's own positionals (``given``) by
    position and leaves those after an option in ``args.extra``. The first
    positional is the URL only without ``--server`` and if it looks like one
    (``scheme://``), so MINT, RAD-69 and DIMSE commands need no dummy URL.

    Raises
    ------
    UsageError
        That URL is not ``http://`` or ``https://`` with a host (a typo), before any request.
    """
    words = [word for word in (args.url, *given, *args.extra) if word]
    args.url = words.pop(0) if words and not args.server and "://" in words[0] else None
    if args.url is not None:
        try:
            http_url(args.url)
        except argparse.ArgumentTypeError as error:
            raise UsageError(f"argument url: {error}") from None
    return words


def profile(args: argparse.Namespace, *, download: bool) -> ServerProfile:
    """The server of every command: from the servers file with ``--server``, else from the options.

    The options a command has (``--user``, ``--downloader``, ``--host``, ...)
    override the profile's settings. ``download=False`` (a search) checks what
    the searcher needs only.

    Raises
    ------
    UsageError
        No server given, or a protocol lacks a setting (named as its option).
    DICOMTrolleyError
        The servers file cannot be read or names no such server.
    """
    given: dict[str, Any] = {name: getattr(args, name, None) for name in _SETTINGS}
    settings = {key: value for key, value in given.items() if value is not None}
    if args.no_verify:
        settings["verify"] = False
    if (args.auth or args.token_command) and args.user:
        raise UsageError(f"argument {'--auth' if args.auth else '--token-command'}: not allowed with --user")
    if args.auth:
        settings["auth"] = args.auth
    elif args.token_command:
        settings.update(auth="token-command", token_command=args.token_command)
    elif args.login_url:
        settings.update(auth="vitrea", realm=args.realm)
    elif args.user:
        settings["auth"] = "basic"
    if args.server:
        fields = {**load_profile(args.server, args.config).model_dump(), **settings}
    elif not any(getattr(args, name, None) for name in ("url", "host", "searcher", "downloader")):
        raise UsageError(f"give a server: dicomtrolley {args.command} (URL | --server NAME) ..., "
                         "or a DIMSE server with --host and --port")
    else:
        fields = {"url": args.url, **settings}
    _check_needs(fields, download=download)
    if not download:
        fields.setdefault("downloader", "wado-uri")  # a search builds no downloader: let the profile need none
    try:
        return ServerProfile(**fields)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'server'}: {e['msg']}" for e in error.errors())
        raise UsageError(problems) from None


def _check_needs(fields: dict[str, Any], *, download: bool) -> None:
    roles = [("searcher", fields.get("searcher") or "qido-rs")]
    if download:
        roles.append(("downloader", fields.get("downloader") or "wado-rs"))
    problems = []
    for role, kind in roles:
        lacking = [_OPTION_FOR.get(name, name) for name in required_settings(kind) if fields.get(name) is None]
        if lacking:
            problems.append(f"--{role} {kind} needs {' and '.join(lacking)}")
    if problems:
        raise UsageError("; ".join(problems))


def check_deidentify_options(args: argparse.Namespace) -> None:
    """Refuse, at parsing, the options of ``--deidentify`` given without it (exit 2)."""
    if args.deidentify is None:
        if args.mapping or args.mapping_in_output:
            raise UsageError("--mapping needs --deidentify")
        if args.command == "download" and args.state_dir:
            raise UsageError("--state-dir needs --deidentify")


def deidentifier(args: argparse.Namespace) -> Deidentifier | None:
    """The deidentifier of ``--deidentify``, its key loaded: a missing key fails before any download."""
    if args.deidentify is None:
        return None
    return Deidentifier.from_toml(
        args.deidentify,
        mapping=args.mapping,
        mapping_in_output=True if args.mapping_in_output else None,
        state_dir=args.state_dir if args.command == "download" else None,  # an export chooses its own
    )
