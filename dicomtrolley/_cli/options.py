"""The options the subcommands share, and the types that check their values while parsing.

A value that cannot be right (``--workers 0``, a template naming no DICOM
keyword) is refused by argparse in one line that names the option, with exit
status 2, before anything is sent to a server.
"""

from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

from dicomtrolley._cli.exits import EXIT_USAGE
from dicomtrolley._values import parse_date
from dicomtrolley.exceptions import StorageError
from dicomtrolley.profiles import DOWNLOADERS, PASSWORD_VARIABLE, SEARCHERS
from dicomtrolley.storage import PathTemplate


class Parser(argparse.ArgumentParser):
    """Reports a user's mistake in one line that names the option, and exits 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def positive_int(text: str) -> int:
    """A whole number of at least 1 (workers, limits, attempts)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def port(text: str) -> int:
    """A TCP port, 1 to 65535."""
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a port is at most 65535, not {value}")
    return value


def seconds(text: str) -> float:
    """A number of seconds, 0 or more (a delay)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def day(text: str) -> date:
    """A day, ``YYYYMMDD`` or ``YYYY-MM-DD``, by the rules every date of the package follows."""
    try:
        return parse_date(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def http_url(text: str) -> str:
    """An ``http://`` or ``https://`` URL with a host: a typo in it is refused before any request."""
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(f"not an http:// or https:// URL: {text!r}")
    return text


def template(text: str) -> str:
    """A path template whose fields are DICOM keywords (a typo gets the closest keyword)."""
    try:
        PathTemplate(text)
    except StorageError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def server_options(parser: argparse.ArgumentParser, *, url_help: str) -> None:
    """Where the server is (a URL, a named server, or a DIMSE address), how to log in, how to check TLS."""
    parser.add_argument("url", nargs="?", help=url_help)
    parser.add_argument("--server", help="a server named in the servers file instead of a URL")
    parser.add_argument("--config", help="the servers file (default: servers.toml in the user's config folder)")
    parser.add_argument("--user", help="user name: HTTP basic auth, or a Vitrea login with --login-url")
    parser.add_argument("--login-url", type=http_url,
                        help=f"Vitrea Connection login URL (password: ${PASSWORD_VARIABLE} or prompt)")
    parser.add_argument("--realm", default="DefaultSystemRealm", help="Vitrea realm (default: %(default)s)")
    tokens = parser.add_mutually_exclusive_group()
    tokens.add_argument("--auth", choices=["google", "azure"],
                        help="bearer tokens from Google's Application Default Credentials, or from Azure's "
                        "DefaultAzureCredential for its DICOM service; renewed as they expire")
    tokens.add_argument("--token-command", metavar="CMD",
                        help="bearer tokens printed by this command, e.g. 'gcloud auth print-access-token'")
    tls = parser.add_mutually_exclusive_group()
    tls.add_argument("--no-verify", action="store_true", help="do not verify TLS certificates")
    tls.add_argument("--ca-file", help="verify TLS certificates with this CA file (default: $REQUESTS_CA_BUNDLE, "
                                       "$SSL_CERT_FILE, or the system's)")
    dimse = parser.add_argument_group("DIMSE (with --searcher c-find, --downloader c-get or c-move)")
    dimse.add_argument("--host", help="the DICOM server's host name or address")
    dimse.add_argument("--port", type=port, help="its DICOM port")
    dimse.add_argument("--aet", help="our AE title (default: DICOMTROLLEY); C-MOVE sends to it")
    dimse.add_argument("--called-aet", dest="aec", metavar="AET", help="the server's AE title (default: ANY-SCP)")


URL_HELP = "DICOMweb root URL, e.g. http://localhost:8042/dicom-web (or --server NAME)"
"""What the URL positional is, for a command that needs a DICOMweb server (or a named one)."""

SOURCE_URL_HELP = URL_HELP[:-1] + "; none for MINT with RAD-69, or DIMSE)"
"""What the URL positional is, for a command that downloads: any source protocol may go without it."""


def server_command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    *,
    help: str,
    usage: str,
    url_help: str = URL_HELP,
) -> argparse.ArgumentParser:
    """A subcommand that talks to a server: its parser, the :func:`server_options` first.

    Every such command (search, download, export, upload, probe) is declared
    the same way, so the server options stand in the same place in each
    command's help, and a new command gets them by being declared here.
    """
    parser = sub.add_parser(name, help=help, usage=usage)
    server_options(parser, url_help=url_help)
    return parser


def searcher_options(parser: argparse.ArgumentParser) -> None:
    """Which protocol searches."""
    parser.add_argument("--searcher", choices=sorted(SEARCHERS),
                        help="search protocol (default: qido-rs, or the server's)")
    parser.add_argument("--mint-url", help="MINT root, e.g. https://vitrea/MINTApi (with --searcher mint)")


def downloader_options(parser: argparse.ArgumentParser) -> None:
    """Which protocol downloads."""
    parser.add_argument("--downloader", choices=sorted(DOWNLOADERS),
                        help="download protocol (default: wado-rs, or the server's)")
    parser.add_argument("--wado-uri-url", help="WADO-URI endpoint (default: <server>/wado next to the DICOMweb root)")
    parser.add_argument("--rad69-url", help="IHE RAD-69 endpoint, e.g. https://vitrea/rids (with --downloader rad69)")
    parser.add_argument("--move-port", type=port, metavar="PORT",
                        help="with --downloader c-move: the port we receive on; the server must know "
                        "--aet at this host and port")


def output_options(parser: argparse.ArgumentParser, *, output_help: str, required: bool = True) -> None:
    """The output folder (``required``: unless the command has another place to put instances) and its template."""
    parser.add_argument("-o", "--output", required=required, help=output_help)
    parser.add_argument(
        "--template", type=template,
        help="path template, e.g. '{PatientID}/{SeriesNumber:03d}/{InstanceNumber:05d}.dcm'",
    )


PSEUDONYMISED_STATE = "<output>.state beside the mapping, or beside the output folder"
"""Where a pseudonymised download or export keeps its state when ``--state-dir`` does not say."""


def deidentify_options(parser: argparse.ArgumentParser, *, state_help: str) -> None:
    """Pseudonymisation on the way to disk, and ``--state-dir``, where the originals' values are recorded.

    ``state_help`` says what else the command keeps in the state folder; ``{pseudonymised}``
    in it stands for where the state goes by default when pseudonymising (:data:`PSEUDONYMISED_STATE`).
    """
    parser.add_argument("--deidentify", metavar="CONFIG.toml", type=Path,
                        help="pseudonymise on the way to disk with these options (an empty file: the defaults); "
                        "the key comes from $DICOMTROLLEY_DEID_KEY, the config's key_file, or the keyring")
    parser.add_argument("--mapping", metavar="FILE", type=Path,
                        help="with --deidentify: write the original -> pseudonym table (CSV) here")
    parser.add_argument("--mapping-in-output", action="store_true", help="allow --mapping inside the output folder")
    parser.add_argument("--state-dir", metavar="DIR", type=Path,
                        help=state_help.format(pseudonymised=PSEUDONYMISED_STATE))


def fetch_options(
    parser: argparse.ArgumentParser,
    *,
    output_help: str,
    workers_help: str,
    state_help: str,
    output_required: bool = True,
) -> None:
    """What every command that fetches studies takes (``download``, ``export``), declared once.

    The protocols that search and download, the output folder and its template,
    the parallel requests, the progress bar, and pseudonymisation with its state
    folder; each command says in its own words what its output and state folders
    hold and what ``--workers`` counts.
    """
    searcher_options(parser)
    downloader_options(parser)
    output_options(parser, output_help=output_help, required=output_required)
    parser.add_argument("--workers", type=positive_int, help=workers_help)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    deidentify_options(parser, state_help=state_help)
