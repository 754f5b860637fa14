"""What the client scripts share: timing the work, printing the result, a canned server answer, the command line.

Standard library and requests only: ``client_reference.py`` imports this from
a virtual environment that has dicomtrolley 4.1.0 and nothing of this repository.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import resource
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import requests
import urllib3
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

T = TypeVar("T")

CHUNK = 1 << 20
"""Bytes per chunk when a parser is fed from a file."""

KEYWORDS = (
    "SOPInstanceUID", "SeriesInstanceUID", "InstanceNumber", "SeriesNumber", "Modality", "SeriesDescription",
    "SliceThickness", "PixelSpacing", "ImagePositionPatient", "Rows", "Columns", "StudyDate",
)
"""The metadata columns both research clients build, one row per instance."""


def report(work: Callable[[], T], describe: Callable[[T], dict[str, Any]] | None = None) -> None:
    """Run ``work`` once; print its wall and CPU seconds (worker processes' included) and what ``describe`` says.

    The line printed is one JSON object: ``{"seconds": ..., "cpu": ..., **describe(result)}``.
    Describing happens after the clock stops, so counting the output is not timed.
    """
    before = _cpu()
    started = time.perf_counter()
    result = work()
    seconds = time.perf_counter() - started
    cpu = _cpu() - before
    extra = describe(result) if describe is not None else {}
    print(json.dumps({"seconds": seconds, "cpu": cpu, **extra}), flush=True)


def _cpu() -> float:
    """CPU seconds of this process and of its children that ended (worker processes, say)."""
    return sum(
        usage.ru_utime + usage.ru_stime
        for usage in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    )


def file_chunks(path: str | Path, size: int = CHUNK) -> Iterator[bytes]:
    """The bytes of a file, ``size`` at a time, as a socket would deliver them."""
    with open(path, "rb") as file:
        while chunk := file.read(size):
            yield chunk


def load_json(path: str | Path) -> Any:
    """A saved JSON document, read before the clock starts.

    The cyclic garbage collector is held off while a large document becomes
    objects (which is 10x faster), then run once, so the timed work starts in
    the state of a program that has had the data for a while.
    """
    gc.disable()
    try:
        loaded = json.loads(Path(path).read_bytes())
    finally:
        gc.enable()
    gc.collect()
    return loaded


def study_counts(studies: Iterable[Any]) -> dict[str, Any]:
    """What a search found, for :func:`report`: its studies and their instances (any client's ``all_instances``)."""
    studies = list(studies)
    return {"count": sum(len(study.all_instances()) for study in studies), "studies": len(studies)}


class CannedAnswer(BaseAdapter):
    """A transport that answers every request with one saved QIDO-RS body, without a network.

    Mounted on a session, it lets a searcher's whole answer handling (JSON
    decoding and the tree) be timed on exactly the bytes a server sent. A
    request for a later page (``offset`` > 0) gets ``[]``: the saved body is
    the whole result.
    """

    def __init__(self, body: bytes, *, streamed: bool = False) -> None:
        super().__init__()
        self.body = body
        self.streamed = streamed
        """Serve the body as a stream to read (``stream=True`` requests read and close it), not as content."""

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        """Answer ``request`` with the saved body (or an empty page)."""
        offset = parse_qs(urlsplit(request.url or "").query).get("offset", ["0"])[0]
        body = b"[]" if int(offset) > 0 else self.body
        response = requests.Response()
        response.status_code = 200
        response.reason = "OK"
        response.headers = CaseInsensitiveDict(
            {"Content-Type": "application/dicom+json", "Content-Length": str(len(body))}
        )
        if self.streamed:  # through urllib3, as a real connection's body: read1 and decode_content work
            response.raw = urllib3.HTTPResponse(body=io.BytesIO(body), preload_content=False)
        else:
            response.raw = io.BytesIO(body)  # read as a server's body is: streamed, or whole via .content
        response.url = request.url or ""
        response.request = request
        return response

    def close(self) -> None:
        """Nothing to release."""


def canned_session(url: str, canned: str | None, *, streamed: bool = False) -> requests.Session:
    """A session whose requests below ``url`` get the body saved in the file ``canned`` (the server's without one)."""
    session = requests.Session()
    if canned:
        session.mount(url, CannedAnswer(Path(canned).read_bytes(), streamed=streamed))
    return session


class Commands:
    """A client's command line: one subcommand per task, each run by a function of the parsed arguments."""

    def __init__(self, doc: str) -> None:
        self.parser = argparse.ArgumentParser(description=doc.split("\n")[0])
        self._commands = self.parser.add_subparsers(dest="command", required=True)

    def add(self, name: str, run: Callable[[argparse.Namespace], None], *required: str) -> argparse.ArgumentParser:
        """The subcommand ``name``, run by ``run``, with the ``required`` options (strings); add others to it."""
        command = self._commands.add_parser(name)
        for option in required:
            command.add_argument(option, required=True)
        command.set_defaults(run=run)
        return command

    def main(self, argv: list[str] | None = None) -> int:
        """Parse ``argv`` (the process's arguments when None) and run the task it names."""
        args = self.parser.parse_args(argv)
        args.run(args)
        return 0


def canned_argument(command: argparse.ArgumentParser) -> None:
    """``--canned FILE``: answer every request with this saved body instead of the server's."""
    command.add_argument("--canned", help="answer every request with this saved body instead of the server's")


def dimse_arguments(command: argparse.ArgumentParser, aet: str) -> None:
    """The options of a C-GET of one study to disk: the server's address and AE title, ours, the study, the output."""
    command.add_argument("--host", required=True)
    command.add_argument("--port", type=int, required=True)
    command.add_argument("--aet", default=aet)
    command.add_argument("--aec", required=True)
    command.add_argument("--study", required=True)
    command.add_argument("--out", required=True)


def rad69_arguments(command: argparse.ArgumentParser) -> None:
    """The options both RAD-69 clients take: the Vitrea login, the endpoints, the study, the output."""
    for name in ("--login", "--user", "--mint", "--rad69", "--study", "--out"):
        command.add_argument(name, required=True)
    command.add_argument("--instances", help="JSON list of [study, series, instance] UIDs: skip the search")


def mint_arguments(command: argparse.ArgumentParser) -> None:
    """The options both MINT clients take: the MINT root, the patient, the saved answer."""
    command.add_argument("--mint", required=True)
    command.add_argument("--patient", required=True)
    command.add_argument("--canned", required=True, help="answer with this saved MINT body")
