"""Ask a DICOMweb server, cheaply and read-only, what it supports.

:func:`probe` sends a handful of small requests (``limit=1`` searches, one
search for up to :data:`~dicomtrolley.probe_cap.CEILING` studies to see a cap,
one instance's retrieve with each Accept form and each common transfer
syntax, headers only) and never stores anything: STOW-RS is asked with
``OPTIONS``. What retries and a renewing auth smooth over along the way
(a 429 waited out, a 401 answered with a new token) and whether the server
needs credentials at all (one search sent without them) are watched by
:mod:`dicomtrolley.probe_access`. Each answer becomes a :class:`Finding`; the
:class:`ProbeReport` prints as a table, dumps as JSON, and suggests the
server profile that uses what was learned (the Accept form a retrieve should
start with, a downloader that works when WADO-RS does not, the cap a search
cannot get past: :mod:`dicomtrolley.probe_cap`), which :func:`save_profile`
writes into the servers file.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests
from pydicom.uid import UID, ImplicitVRLittleEndian

from dicomtrolley._http import (
    DEFAULT_TIMEOUT,
    HTTPClient,
    QueryValue,
    RetryPolicy,
    Timeout,
    encode_query,
    redact_url,
)
from dicomtrolley.exceptions import ConnectionFailedError, DICOMTrolleyAuthError, DICOMTrolleyError
from dicomtrolley.probe_access import Access, AccessWatch, NoCredentials
from dicomtrolley.probe_cap import CEILING, check_cap
from dicomtrolley.profiles import ServerProfile, default_config_path
from dicomtrolley.qido_rs import MORE_RESULTS_WARNING
from dicomtrolley.wado_rs import AS_STORED_FORMS, EXPLICIT_SYNTAXES

logger = logging.getLogger(__name__)

DICOM_JSON = "application/dicom+json"
_FRAMES = 'multipart/related; type="application/octet-stream"'
_UID = "0020000D", "0020000E", "00080018"  # study, series, SOP instance
_STUDY_DATE = "00080020"


@dataclass(frozen=True)
class Finding:
    """One capability asked about.

    Attributes
    ----------
    name
        What was asked (``QIDO-RS studies``, ``WADO-RS Accept ...``).
    supported
        True: it worked; False: refused or failed; None: not asked (nothing to ask with).
    detail
        The status, count or reason.
    """

    name: str
    supported: bool | None
    detail: str = ""


@dataclass
class ProbeReport:
    """What a probe found, in the order asked.

    Attributes
    ----------
    url
        The DICOMweb root probed (without credentials).
    findings
        One per capability.
    accept
        The first Accept form a retrieve was served with, if any.
    search_caps
        The cap each kind of searcher (``qido-rs``, ``c-find``) was found cut
        at and cannot get past by paging: a profile's ``search_cap``.
    access
        Whether the server needs credentials, whether the session's worked,
        and the 429s and 503s seen (None: not probed over HTTP).
    """

    url: str
    findings: list[Finding] = field(default_factory=list)
    accept: str | None = None
    search_caps: dict[str, int] = field(default_factory=dict)
    access: Access | None = None

    def supports(self, name: str) -> bool | None:
        """Whether the capability called ``name`` worked (None: not asked)."""
        return next((f.supported for f in self.findings if f.name == name), None)

    def to_table(self) -> str:
        """The findings as an aligned text table."""
        marks = {True: "yes", False: "no", None: "-"}
        width = max((len(f.name) for f in self.findings), default=10)
        lines = [f"{'capability':<{width}}  ok   detail"]
        lines += [f"{f.name:<{width}}  {marks[f.supported]:<4} {f.detail}" for f in self.findings]
        learned = [f"{searcher} searches capped at {cap}" for searcher, cap in self.search_caps.items()]
        if self.accept and self.accept != AS_STORED_FORMS[0]:
            learned.append(f"retrieve with Accept: {self.accept}")
        learned += self.notes()
        return "\n".join([*lines, *([""] if learned else []), *learned])

    def to_dict(self) -> dict[str, Any]:
        """The report as plain data, for ``--json``."""
        return {"url": self.url, "accept": self.accept, "search_caps": self.search_caps,
                "access": asdict(self.access) if self.access else None,
                "findings": [asdict(f) for f in self.findings]}

    def notes(self) -> list[str]:
        """What was learned that no profile setting holds (the server needs credentials, it rate-limits)."""
        return self.access.notes() if self.access else []

    def profile(self, base: ServerProfile) -> ServerProfile:
        """``base`` with what was learned.

        The Accept form to start with, WADO-URI when only it retrieves, and
        the cap of the profile's searcher as ``search_cap``, so that its
        searches over a date range are split without asking again.
        """
        updates: dict[str, Any] = {}
        if self.accept and self.accept != AS_STORED_FORMS[0]:
            updates["accept"] = self.accept
        if self.accept is None and self.supports("WADO-URI retrieve"):
            updates["downloader"] = "wado-uri"
        if base.searcher in self.search_caps:
            updates["search_cap"] = self.search_caps[base.searcher]
        return base.model_copy(update=updates)


def probe(session: requests.Session, url: str, *, timeout: Timeout = DEFAULT_TIMEOUT) -> ProbeReport:
    """Ask the DICOMweb server at ``url`` what it supports; read-only.

    Every step is a finding in the report, refusals included (with their
    status); only a first search that cannot connect ends the probe.

    Raises
    ------
    ConnectionFailedError
        The server cannot be reached at all (the first search could not connect).
    DICOMTrolleyAuthError
        The session's auth could not get a credential, or a renewed one was refused (the step named).
    """
    root = url.rstrip("/")
    watch = AccessWatch(session, root)
    http = HTTPClient(session, timeout=timeout, retry=RetryPolicy(attempts=2, backoff=0.2), observe=watch)
    report = ProbeReport(redact_url(root))
    asker = _Asker(http, root, report)
    first = asker.search("QIDO-RS studies", "/studies", {"limit": 1}, reach=True)
    first_answer = without = asker.last
    if watch.credentials is not None:
        without = asker.send("GET", f"{root}/studies?limit=1", DICOM_JSON, auth=NoCredentials())
        if without is not None:
            without.close()
    study = _value(first, _UID[0])
    asker.cap(pageable=asker.paging())
    asker.search("QIDO-RS includefield=all", "/studies", {"limit": 1, "includefield": "all"})
    asker.fuzzy(first)
    asker.search("QIDO-RS relational series", "/series", {"limit": 1})
    asker.search("QIDO-RS relational instances", "/instances", {"limit": 1})
    series = _value(asker.search("QIDO-RS series", f"/studies/{study}/series", {"limit": 1}, needs=study), _UID[1])
    path = f"/studies/{study}/series/{series}"
    instance = _value(asker.search("QIDO-RS instances", f"{path}/instances", {"limit": 1}, needs=series), _UID[2])
    target = f"{root}{path}/instances/{instance}" if instance else None
    for form in AS_STORED_FORMS:
        if asker.retrieve(f"WADO-RS Accept {_short(form)}", target, form) and report.accept is None:
            report.accept = form
    for syntax in (ImplicitVRLittleEndian, *EXPLICIT_SYNTAXES):
        asker.retrieve(f"WADO-RS transfer-syntax={syntax}", target, f"{AS_STORED_FORMS[1]}; transfer-syntax={syntax}",
                       about=UID(syntax).name)
    asker.retrieve("WADO-RS metadata", target and f"{target}/metadata", DICOM_JSON)
    asker.retrieve("WADO-RS rendered", target and f"{target}/rendered", "image/jpeg")
    asker.retrieve("WADO-RS thumbnail", target and f"{target}/thumbnail", "image/jpeg")
    asker.retrieve("WADO-RS frames", target and f"{target}/frames/1", _FRAMES)
    asker.stow()
    asker.wado_uri(study, series, instance)
    report.access = watch.access(without=without, first=first_answer)
    asker.add("Authentication", *report.access.authentication())
    asker.add("Rate limiting", *report.access.rate_limiting())
    return report


class _Asker:
    """The probe's requests, each turned into a finding."""

    def __init__(self, http: HTTPClient, root: str, report: ProbeReport) -> None:
        self.http = http
        self.root = root
        self.report = report
        self.last: requests.Response | None = None
        """The answer to the latest request (None: it could not be sent)."""

    def add(self, name: str, supported: bool | None, detail: str) -> None:
        self.report.findings.append(Finding(name, supported, detail))
        logger.info("probe %s: %s (%s)", name, supported, detail)

    def send(
        self, method: str, url: str, accept: str, *, reach: str = "", auth: NoCredentials | None = None,
    ) -> requests.Response | None:
        """One request; None (and a finding by the caller) when it could not be sent.

        With ``reach`` (the step's name), a request that cannot connect ends
        the probe; ``auth`` replaces the session's.
        """
        self.last = None
        try:
            self.last = self.http.send(method, url, headers={"Accept": accept}, stream=True, auth=auth)
        except ConnectionFailedError as error:
            if reach:
                raise ConnectionFailedError(f"probe step {reach!r}: {error}") from error
        except DICOMTrolleyAuthError as error:  # no token, or one refused right after renewal
            raise DICOMTrolleyAuthError(f"probe step {reach or f'{method} {redact_url(url)}'!r}: {error}") from error
        return self.last

    def search(
        self, name: str, path: str, params: dict[str, Any], *, needs: str | None = "", reach: bool = False,
    ) -> dict[str, Any] | None:
        """A QIDO-RS search; returns its first result, if any.

        ``needs`` is the UID the search is within: None when an earlier search found none.
        """
        if needs is None:
            self.add(name, None, "nothing found to search within")
            return None
        url = f"{self.root}{path}?{encode_query(params)}"
        response = self.send("GET", url, DICOM_JSON, reach=name if reach else "")
        rows = _json_rows(response)
        if response is None or rows is None:
            self.add(name, False, _why(response))
            return None
        warning = response.headers.get("Warning", "")
        self.add(name, True, f"{len(rows)} result(s)" + (f"; Warning: {warning}" if warning else ""))
        return rows[0] if rows else None

    def fuzzy(self, study: dict[str, Any] | None) -> None:
        """Fuzzy matching, applied or only accepted: is a study found by a word of its PatientName in lower case?

        Literal matching finds no study that way, fuzzy matching as servers
        implement it (a case-insensitive match of a name's words, or of
        their beginnings) does. The name itself is never reported.
        """
        name = "QIDO-RS fuzzy matching"
        uid, word = _value(study, _UID[0]), _fuzzy_word(study)
        if not (uid and word):
            self.search(name, "/studies", {"limit": 1, "fuzzymatching": "true"})
            return
        query: dict[str, QueryValue] = {"PatientName": word, "StudyInstanceUID": uid, "fuzzymatching": "true",
                                        "limit": 1}
        response = self.send("GET", f"{self.root}/studies?{encode_query(query)}", DICOM_JSON)
        rows = _json_rows(response)
        if rows is None:
            self.add(name, False, _why(response))
        elif rows:
            self.add(name, True, "a study found by one word of its patient's name, in lower case")
        else:
            self.add(name, False, "accepted, but a study is not found by one word of its patient's name in lower "
                                  "case: literal matching only")

    def paging(self) -> bool:
        """Whether ``limit`` and ``offset`` are honoured: two one-result pages must differ."""
        pages = [_json_rows(self.send("GET", f"{self.root}/studies?{query}", DICOM_JSON))
                 for query in ("limit=1", "limit=1&offset=1")]
        first, second = pages
        if first is None or second is None:
            self.add("QIDO-RS limit/offset", False, "a page with limit or offset was refused")
        elif len(first) > 1:
            self.add("QIDO-RS limit/offset", False, f"limit=1 answered {len(first)} results")
        elif first and second and first[0] == second[0]:
            self.add("QIDO-RS limit/offset", False, "offset is ignored: answers past the server's cap are lost")
        else:
            self.add("QIDO-RS limit/offset", True, "honoured" if second else "honoured (one study to page)")
            return True
        return False

    def cap(self, *, pageable: bool) -> None:
        """The most studies one answer holds (:func:`~dicomtrolley.probe_cap.check_cap`).

        A cap that ``offset`` pages past (``pageable``, and a page just past
        the cap finds a new study) costs searches nothing; one it cannot is
        kept as the report's ``qido-rs`` search cap.
        """
        name = "QIDO-RS result cap"
        response = self.send("GET", f"{self.root}/studies?limit={CEILING}", DICOM_JSON)
        warning = response.headers.get("Warning", "") if response is not None else ""
        rows = _json_rows(response)
        if rows is None:
            self.add(name, False, _why(response))
            return
        answer = {uid: _value(row, _STUDY_DATE) or "" for row in rows if (uid := _value(row, _UID[0]))}
        told = "its Warning header says more results exist" if MORE_RESULTS_WARNING.search(warning) else ""
        check = check_cap(answer, self.studies_in, told=told)
        if not check.cut:
            self.add(name, None if check.cut is None else True, check.detail)
        elif pageable and (self.studies_in("", 1, offset=check.found) or set()) - set(answer):
            self.add(name, True, f"{check.detail}; offset pages past it")
        else:
            self.report.search_caps["qido-rs"] = check.found
            self.add(name, False, f"{check.detail}; offset cannot page past it: searches over dates are split")

    def studies_in(self, date_range: str, most: int, *, offset: int = 0) -> set[str] | None:
        """The UIDs of up to ``most`` studies in a StudyDate range (all with ''), from ``offset`` on."""
        params: dict[str, QueryValue] = {"StudyDate": date_range, "limit": most, "offset": offset}
        url = f"{self.root}/studies?{encode_query({key: value for key, value in params.items() if value})}"
        rows = _json_rows(self.send("GET", url, DICOM_JSON))
        return None if rows is None else {uid for row in rows if (uid := _value(row, _UID[0]))}

    def retrieve(self, name: str, url: str | None, accept: str, *, about: str = "") -> bool:
        """GET ``url`` with ``accept``, reading the status only; ``about`` prefixes the detail."""
        if url is None:
            self.add(name, None, "no instance found to retrieve")
            return False
        response = self.send("GET", url, accept)
        ok = response is not None and response.status_code < 300
        served = re.sub(r";\s*boundary=[^;]*", "", response.headers.get("Content-Type", "")) if response else ""
        detail = served if ok else _why(response)
        self.add(name, ok, f"{about}: {detail}" if about else detail)
        if response is not None:
            response.close()
        return ok

    def stow(self) -> None:
        """STOW-RS, asked with OPTIONS only: the probe never stores."""
        response = self.send("OPTIONS", f"{self.root}/studies", "*/*")
        if response is None:
            self.add("STOW-RS (OPTIONS)", False, "no answer")
            return
        allow = response.headers.get("Allow", "")
        response.close()
        if allow:
            self.add("STOW-RS (OPTIONS)", "POST" in allow.upper(), f"Allow: {allow}")
        else:
            self.add("STOW-RS (OPTIONS)", None, f"{response.status_code}: OPTIONS says nothing; not tried with a POST")

    def wado_uri(self, study: str | None, series: str | None, instance: str | None) -> None:
        """WADO-URI at ``wado`` beside the DICOMweb root, for the instance found."""
        if not (study and series and instance):
            self.add("WADO-URI retrieve", None, "no instance found to retrieve")
            return
        endpoint = self.root.rsplit("/", 1)[0] + "/wado"
        params = {"requestType": "WADO", "studyUID": study, "seriesUID": series, "objectUID": instance,
                  "contentType": "application/dicom"}
        self.retrieve("WADO-URI retrieve", f"{endpoint}?{encode_query(params)}", "application/dicom")


def _short(form: str) -> str:
    syntax = re.findall(r"transfer-syntax=([^,;\s]+)", form)
    if not syntax:
        return "(no transfer syntax)"
    return f"transfer-syntax={syntax[0]}" + (f" (+{len(syntax) - 1})" if len(syntax) > 1 else "")


def _value(row: dict[str, Any] | None, tag: str) -> str | None:
    """The first value of ``tag`` in a DICOM JSON result, as text."""
    values = (row or {}).get(tag, {}).get("Value", [None])
    return str(values[0]) if values and values[0] else None


def _fuzzy_word(study: dict[str, Any] | None) -> str | None:
    """One word of the study's PatientName, in lower case, that literal matching cannot match the name with.

    The last name component (a given name) when there are two or more; else
    the name without its last letter, which fuzzy matching finds as the
    beginning of a word.
    """
    values = (study or {}).get("00100010", {}).get("Value") or [{}]
    alphabetic = values[0].get("Alphabetic", "") if isinstance(values[0], dict) else ""
    words = [part for part in re.split(r"[\^\s]+", alphabetic) if part]
    if len(words) > 1:
        return words[-1].lower()
    return words[0][:-1].lower() if words and len(words[0]) > 2 else None


def _json_rows(response: requests.Response | None) -> list[dict[str, Any]] | None:
    """The DICOM JSON results of a search answer, or None when it failed or is not a list."""
    if response is None or response.status_code >= 300:
        return None
    with response:
        if response.status_code == 204:
            return []
        try:
            rows = json.loads(response.content or b"[]")
        except ValueError:
            return None
    return rows if isinstance(rows, list) else None


def _why(response: requests.Response | None) -> str:
    if response is None:
        return "could not connect"
    return f"{response.status_code} {response.reason or ''}".strip()


# ------------------------------------------------------------ the servers file


def save_profile(
    profile: ServerProfile, name: str, path: str | os.PathLike[str] | None = None, *, notes: Iterable[str] = (),
) -> Path:
    """Write ``profile`` as ``[servers.NAME]`` into the servers file, replacing a table of that name.

    Only the settings that differ from the defaults are written, after
    ``notes`` as comments (what a probe learned that no setting holds:
    :meth:`ProbeReport.notes`); the rest of the file (comments included) is
    kept as it is. Returns the file's path.
    """
    file = Path(path) if path is not None else default_config_path()
    text = file.read_text(encoding="utf-8") if file.exists() else ""
    kept = _without_table(text.splitlines(), f"servers.{name}")
    values = profile.model_dump(exclude_defaults=True, exclude={"name"}, mode="json")
    table = [f"[servers.{name}]", *(f"# {' '.join(note.split())}" for note in notes),
             *(f"{key} = {_toml_value(value)}" for key, value in values.items())]
    content = "\n".join([*kept, *([""] if kept and kept[-1].strip() else []), *table]) + "\n"
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(content, encoding="utf-8")
    return file


def _without_table(lines: Iterable[str], table: str) -> list[str]:
    kept: list[str] = []
    inside = False
    for line in lines:
        header = line.strip()
        if header.startswith("["):
            inside = header.strip("[] ") == table
        if not inside:
            kept.append(line)
    while kept and not kept[-1].strip():
        kept.pop()
    return kept


def _toml_value(value: Any) -> str:
    convert: dict[type, Callable[[Any], str]] = {bool: lambda v: "true" if v else "false", int: str, float: repr}
    if type(value) in convert:
        return convert[type(value)](value)
    if isinstance(value, str):
        return json.dumps(value)
    raise DICOMTrolleyError(f"A profile setting of type {type(value).__name__} cannot be written to TOML")
