"""Mistyped options: DICOM keywords in any case, and the closest option for the rest.

``--patientid`` is ``--PatientID``: a DICOM keyword option is taken in any
case when only one option matches it so. Any other option the subcommand
lacks is refused in one line naming the closest one it has
(``--PatientIdd``: did you mean ``--PatientID``?) instead of argparse's bare
"unrecognized arguments".
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Sequence


def subcommand_parser(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.ArgumentParser | None:
    """The parser of the subcommand ``argv`` names (its first word that is one), if any."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            choices: dict[str, argparse.ArgumentParser] = action.choices
            return next((choices[word] for word in argv if word in choices), None)
    return None


def corrected(parser: argparse.ArgumentParser, argv: Sequence[str], keywords: Sequence[str]) -> list[str]:
    """``argv`` with keyword options in the wrong case put right; an unknown option with a close match
    is refused through ``parser.error`` (exit 2), naming it."""
    known = list(parser._option_string_actions)
    by_case: dict[str, list[str]] = {}
    for keyword in keywords:
        by_case.setdefault(f"--{keyword}".lower(), []).append(f"--{keyword}")
    out: list[str] = []
    rest = iter(argv)
    for word in rest:
        if word == "--":
            out += [word, *rest]
            break
        name, equals, value = word.partition("=")
        if not name.startswith("--") or name in known or _abbreviates(name, known):
            out.append(word)
            continue
        same = by_case.get(name.lower(), [])
        if len(same) == 1:
            out.append(same[0] + equals + value)
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
        if not close:
            close = [option for option in known if option.lower() == name.lower()]
        if close:
            parser.error(f"unrecognized option {name}; did you mean {close[0]}?")
        out.append(word)
    return out


def _abbreviates(name: str, known: list[str]) -> bool:
    """argparse takes a unique prefix of a long option; leave those (and ambiguous ones) to it."""
    return any(option.startswith(name) for option in known if option.startswith("--"))
