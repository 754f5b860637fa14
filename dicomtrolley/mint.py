"""MINT: find studies, series and instances on a Vitrea Connection server.

MINT (the Medical Imaging Network Transport) is the search Vitrea offers beside
QIDO-RS. :class:`Mint` sends a :class:`~dicomtrolley.core.Query` as a
``GET {url}/studies`` with DICOM keywords as parameters and turns the XML
answer into the same study tree QIDO-RS gives: :class:`~dicomtrolley.core.Study`,
:class:`~dicomtrolley.core.Series` and :class:`~dicomtrolley.core.Instance`
objects whose ``data`` are pydicom Datasets. Each study is a :class:`MintStudy`
(4.x's name), which also keeps MINT's own study id and modification time.

The answer
----------
A ``studySearchResults`` document in the namespace ``http://medical.nema.org/mint``:
``study`` elements holding ``attr`` elements (``tag``, ``vr``, ``val``) and,
below study level, ``series`` elements holding ``attr`` elements of their own and
``instance`` elements (Vitrea writes a study's and a series' ``attr`` elements
after their children). The XML is parsed as it arrives, each study into the
tree as its element ends: nothing but the tree is kept, so a 20,000-instance
answer costs the memory of its tree. Each node's data holds its own attributes and those of
its parents, as a QIDO-RS row does (an instance knows its PatientID), so path
templates and the trolley's checks work the same with either searcher.

VRs come from the DICOM dictionary where it knows the tag (the server's
``vr`` is used where the dictionary allows several, and for private tags);
multi-valued text is split at the DICOM backslash; numbers become numbers.

Documents with a DTD are refused before anything is expanded, so an answer
cannot make the parser read files or blow up in memory. Anything that is not
a MINT answer (an HTML error page with status 200, plain text, an empty
body, XML in another namespace, a result without the UIDs the tree needs)
raises :class:`~dicomtrolley.exceptions.MalformedResponseError` naming the
URL, the status and the start of the body.

What a query can ask
--------------------
Every DICOM attribute of the query is sent under its keyword (``*`` and ``?``
wildcards as written). ``query_level`` becomes ``QueryLevel``,
``include_fields`` becomes ``IncludeFields``, ``limit`` is sent as is. The
reference server wants both ends of a date range; an open end is sent as
:data:`EARLIEST_DATE` or :data:`LATEST_DATE`. MINT has no paging, so an
``offset`` raises :class:`~dicomtrolley.exceptions.UnSupportedParameterError`,
as does ``include_fields=["all"]``.
"""

from __future__ import annotations

import functools
import logging
import xml.parsers.expat
from collections.abc import Callable, Iterable, Mapping
from datetime import date
from typing import Any, NoReturn

import requests
from pydantic import field_validator, model_validator
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset

from dicomtrolley._http import QueryValue, iter_body, redact_url
from dicomtrolley._http_searcher import HTTPSearcher
from dicomtrolley._tree import attribute_level, gc_paused
from dicomtrolley.core import Instance, Query, Series, Study, is_hex_tag
from dicomtrolley.core import QueryLevels as QueryLevels  # 4.x's examples import it from here
from dicomtrolley.exceptions import MalformedResponseError, UnSupportedParameterError

logger = logging.getLogger(__name__)

PROLOG_BYTES = 64 * 1024
"""At most this much of an answer before its root element is kept, to read it again as UTF-8."""

MINT_NAMESPACE = "http://medical.nema.org/mint"

EARLIEST_DATE = "19000101"
"""Sent as ``min_study_date`` when a query gives only the latest study date."""

LATEST_DATE = "99991231"
"""Sent as ``max_study_date`` when a query gives only the earliest study date."""

EXCERPT_BYTES = 200
"""How much of a malformed answer an error message quotes."""

_ROOT = f"{MINT_NAMESPACE} studySearchResults"
_STUDY = f"{MINT_NAMESPACE} study"
_SERIES = f"{MINT_NAMESPACE} series"
_INSTANCE = f"{MINT_NAMESPACE} instance"
_ATTR = f"{MINT_NAMESPACE} attr"

_STUDY_UID = "0020000D"
_SERIES_UID = "0020000E"
_INSTANCE_UID = "00080018"

_INTEGER_VRS = frozenset({"IS", "SL", "SS", "SV", "UL", "US", "UV"})
_DECIMAL_VRS = frozenset({"DS", "FL", "FD"})
_NO_TEXT_VRS = frozenset({"SQ", "OB", "OD", "OF", "OL", "OV", "OW", "UN"})
"""VRs whose values a text attribute cannot carry; kept as present but empty."""


class MintStudy(Study):
    """A study found by MINT: a :class:`~dicomtrolley.core.Study` that also keeps MINT's own study attributes.

    4.x scripts import this name and read ``mint_uuid`` and ``last_modified``;
    everything else is a plain Study.

    Parameters
    ----------
    uid, data, series, json_data
        As for :class:`~dicomtrolley.core.Study`.
    mint_uuid
        MINT's id for the study (the ``studyUUID`` of the answer, not a DICOM UID); "" if not given.
    last_modified
        When the server last changed the study (``lastModified``, as the server writes it); "" if not given.
    """

    def __init__(
        self,
        uid: str,
        data: Dataset | None = None,
        series: Iterable[Series] = (),
        *,
        json_data: Mapping[str, Any] | None = None,
        mint_uuid: str = "",
        last_modified: str = "",
    ) -> None:
        super().__init__(uid, data, series, json_data=json_data)
        self.mint_uuid = mint_uuid
        self.last_modified = last_modified

    def dump_content(self) -> str:
        """The attributes of the study, its series and their instances as text, for a quick look from a script."""
        lines = [str(self.data)]
        for series in self.series:
            lines.append(str(series.data))
            lines.extend(str(instance.data) for instance in series.instances)
        return "\n".join(lines)


def parse_mint_studies_response(response: requests.Response) -> list[MintStudy]:
    """The studies of a MINT answer already received (4.x's parser, kept for its scripts).

    :meth:`Mint.find_studies` parses as the answer arrives instead; this reads
    a finished answer: ``response.content`` or, where that is empty (a test
    double), ``response.text``, whose declared encoding is then moot (it is
    already text), as 4.x read it.

    Raises
    ------
    MalformedResponseError
        The answer is not a MINT document (see the module documentation).
    """
    reader = MintReader(redact_url(str(response.url)), response.status_code)
    content = response.content
    if content:
        reader.feed(content)
    else:
        reader.feed_text(response.text)
    return reader.close()


class MintQuery(Query):
    """A :class:`~dicomtrolley.core.Query` as dicomtrolley 4.x spelled it for MINT.

    Scripts written for 4.x keep working: ``limit=0`` means "no limit", a
    ``PatientBirthDate`` may be a date, and ``InstitutionalDepartmentName``
    can be matched. :class:`Mint` accepts a plain ``Query`` just as well.
    """

    InstitutionalDepartmentName: str = ""
    limit: int | None = None  # 0 is allowed here, and means "all"

    @field_validator("limit")
    @classmethod
    def _zero_is_all(cls, value: int | None) -> int | None:
        if value is not None and value < 0:
            raise ValueError(f"limit must be 0 (all) or more, not {value}")
        return value or None

    @field_validator("PatientBirthDate", mode="before")
    @classmethod
    def _date_as_text(cls, value: Any) -> Any:
        return value.strftime("%Y%m%d") if isinstance(value, date) else value

    @model_validator(mode="after")
    def _include_fields_of_the_level(self) -> MintQuery:
        # As in 4.x: a MINT answer holds attributes down to its query level only, so
        # asking a study-level search for an instance attribute is a mistake to refuse.
        level = self.query_level.object_level
        finer = [f for f in self.include_fields if f != "all" and attribute_level(f) < level]
        if finer:
            raise ValueError(
                f"include_fields {finer} describe objects below the query level {self.query_level.value}; "
                "a MINT answer at that level cannot hold them"
            )
        return self

    def as_parameters(self) -> dict[str, QueryValue]:
        """The query as MINT URL parameters (what :class:`Mint` sends)."""
        return mint_parameters(self)


def mint_parameters(query: Query) -> dict[str, QueryValue]:
    """Translate ``query`` into the parameters of a MINT ``/studies`` search.

    Raises
    ------
    UnSupportedParameterError
        The query uses ``offset`` or ``include_fields=["all"]``, which MINT cannot express.
    """
    if query.offset:
        raise UnSupportedParameterError("MINT has no paging: a query with an offset cannot be sent")
    if "all" in query.include_fields:
        raise UnSupportedParameterError(
            "MINT cannot be asked for all fields; name them in include_fields"
        )
    keywords = [name for name in type(query).model_fields if name[0].isupper()]
    params: dict[str, QueryValue] = {
        name: value for name in keywords if (value := getattr(query, name)) and isinstance(value, str)
    }
    if query.min_study_date or query.max_study_date:
        params["min_study_date"] = (
            query.min_study_date.strftime("%Y%m%d") if query.min_study_date else EARLIEST_DATE
        )
        params["max_study_date"] = (
            query.max_study_date.strftime("%Y%m%d") if query.max_study_date else LATEST_DATE
        )
    params["QueryLevel"] = query.query_level.value
    if query.include_fields:
        params["IncludeFields"] = ",".join(query.include_fields)
    if query.limit:
        params["limit"] = query.limit
    return params


class Mint(HTTPSearcher):
    """Searches a Vitrea Connection server with MINT.

    Parameters
    ----------
    session
        The ``requests.Session`` to send on, typically one from
        :func:`~dicomtrolley.auth.create_session`; may be shared with a downloader.
    url
        The MINT root, e.g. ``https://vitrea/MINTApi`` (``/studies`` is appended).
    timeout
        Seconds to connect and to wait for data, as ``(connect, read)`` or one number.
    retry
        When to retry a failed request; the package default if None.

    Examples
    --------
    >>> searcher = Mint(create_session(login_url, "user", "password"), "https://vitrea/MINTApi")  # doctest: +SKIP
    >>> searcher.find_studies(Query(PatientID="PAT001", query_level=QueryLevels.SERIES))  # doctest: +SKIP
    [Study('1.2.826...', series=3), ...]
    """

    profile_fields = ("mint", "mint_url")

    def find_studies(self, query: Query) -> list[Study]:
        """Every study matching ``query``, with series and instances down to its query level.

        Raises
        ------
        UnSupportedParameterError
            The query asks for something MINT cannot express (see the module documentation).
        ServerError
            The server answered 4xx or 5xx.
        MalformedResponseError
            The answer is not a MINT document, or a result lacks a UID the tree needs.
        ConnectionFailedError
            The server could not be reached, or the answer broke off.
        """
        params = mint_parameters(query)
        url = f"{self.url}/studies"
        response = self.http.get(url, params=params, headers={"Accept": "application/xml"}, stream=True)
        with response:
            reader = MintReader(redact_url(response.url or url), response.status_code)
            with gc_paused():
                for chunk in iter_body(response):
                    reader.feed(chunk)
                studies: list[Study] = list(reader.close())
        logger.debug("MINT %s: %d stud(ies)", redact_url(url), len(studies))
        return studies


class MintReader:
    """Parses a MINT answer fed in chunks into the study tree, without building an XML tree.

    Parameters
    ----------
    source
        The URL the answer came from (without credentials), for error messages.
    status
        The HTTP status of the answer, for error messages.
    """

    def __init__(self, source: str, status: int) -> None:
        self.source = source
        self.status = status
        self._start = b""
        self._studies: dict[str, MintStudy] = {}
        self._series: dict[tuple[str, str], Series] = {}
        self._seen_instances: set[tuple[tuple[str, str], str]] = set()
        self._root_seen = False
        self._depth = 0
        # The attributes of the study, series and instance being read. Vitrea
        # writes a study's and a series' attrs after their children, so the
        # nodes of a study are made when its element ends (see _end_study).
        self._study: dict[str, Any] = {}
        self._study_mint: tuple[str, str] = ("", "")  # the studyUUID and lastModified of the study being read
        self._study_series: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
        self._series_attrs: dict[str, Any] = {}
        self._series_instances: list[dict[str, Any]] = []
        self._instance: dict[str, Any] = {}
        self._current: dict[str, Any] = self._study
        self._parser = self._new_parser()
        # What was fed before the root element: kept so that an answer whose XML
        # declaration names an encoding no codec knows can be read again as UTF-8.
        self._prolog: list[bytes | str] = []
        self._prolog_size = 0

    def _new_parser(self, encoding: str | None = None) -> xml.parsers.expat.XMLParserType:
        parser = xml.parsers.expat.ParserCreate(encoding, namespace_separator=" ")
        parser.buffer_text = True
        parser.StartDoctypeDeclHandler = self._refuse_dtd
        parser.EntityDeclHandler = self._refuse_entities
        parser.StartElementHandler = self._start_element
        parser.EndElementHandler = self._end_element
        return parser

    def feed(self, chunk: bytes) -> None:
        """Parse the next chunk of the answer."""
        if len(self._start) < EXCERPT_BYTES:
            self._start += chunk[: EXCERPT_BYTES - len(self._start)]
        self._parse(chunk, final=False)

    def feed_text(self, text: str) -> None:
        """Parse the next part of an answer already decoded to text (its declared encoding is ignored)."""
        if len(self._start) < EXCERPT_BYTES:
            self._start += text[:EXCERPT_BYTES].encode()[: EXCERPT_BYTES - len(self._start)]
        self._parse(text, final=False)

    def close(self) -> list[MintStudy]:
        """Finish parsing; return the studies in the order the answer listed them."""
        self._parse(b"", final=True)
        if not self._root_seen:
            self._fail("it is empty" if not self._start.strip() else "it has no studySearchResults element")
        return list(self._studies.values())

    # ------------------------------------------------------------ parsing

    def _parse(self, data: bytes | str, *, final: bool) -> None:
        if not self._root_seen and self._prolog_size <= PROLOG_BYTES:
            self._prolog.append(data)
            self._prolog_size += len(data)
        try:
            self._parser.Parse(data, final)
        except LookupError as error:  # expat asks the codecs for an encoding it does not know
            if self._root_seen or self._prolog_size > PROLOG_BYTES:
                self._fail(f"it declares an encoding Python does not know ({error})")
            # Nothing has been read yet: the declaration is wrong (answers that declare
            # 'UTF-3' have been seen), so read the answer as UTF-8, which MINT servers send.
            logger.warning("%s declares an unknown encoding (%s); reading it as UTF-8", self.source, error)
            self._parser = self._new_parser("utf-8")
            prolog, self._prolog, self._prolog_size = self._prolog, [], 0
            for part in prolog[:-1]:
                self._parse(part, final=False)
            self._parse(prolog[-1], final=final)
            return
        except xml.parsers.expat.ExpatError as error:
            reason = "it is empty" if not self._start.strip() else f"it is not XML ({error})"
            self._fail(reason)
        if self._root_seen:
            self._prolog.clear()

    def _fail(self, reason: str) -> NoReturn:
        raise MalformedResponseError(
            f"The MINT answer from {self.source} (status {self.status}) cannot be read: {reason}; "
            f"it starts {self._start[:EXCERPT_BYTES]!r}"
        )

    def _refuse_dtd(self, *_: object) -> NoReturn:
        self._fail("it declares a DTD, which a MINT answer never needs")

    def _refuse_entities(self, *_: object) -> NoReturn:
        self._fail("it declares entities")

    def _start_element(self, name: str, attributes: dict[str, str]) -> None:
        if name == _ATTR:  # the hot path: a 20,000-instance answer has hundreds of thousands
            given_tag = attributes.get("tag", "")
            known = _attribute_kind(given_tag, attributes.get("vr", ""))
            if known is None:
                self._fail(f"an attr has the tag {given_tag!r}, not 8 hex digits")
            tag, vr, values_of = known
            text = attributes.get("val")
            if not text or values_of is _no_values:
                self._current[tag] = {"vr": vr}
            elif values_of is None:
                self._current[tag] = {"vr": vr, "Value": text.split("\\")}
            else:
                try:
                    self._current[tag] = {"vr": vr, "Value": values_of(text)}
                except ValueError:
                    self._fail(f"attr {tag} ({vr}) has the value {text!r}, which is not a number")
            return
        if not self._depth:
            if name != _ROOT:
                self._fail(f"its root element is {_clark(name)}, not {{{MINT_NAMESPACE}}}studySearchResults")
            self._root_seen = True
        elif name == _STUDY:
            self._study = {}
            self._study_mint = (attributes.get("studyUUID", ""), attributes.get("lastModified", ""))
            self._study_series = []
            self._current = self._study
        elif name == _SERIES:
            self._series_attrs = {}
            self._series_instances = []
            self._current = self._series_attrs
        elif name == _INSTANCE:
            self._instance = {}
            self._current = self._instance
        self._depth += 1

    def _end_element(self, name: str) -> None:
        if name == _ATTR:
            return
        self._depth -= 1
        if name == _INSTANCE:
            self._series_instances.append(self._instance)
            self._current = self._series_attrs
        elif name == _SERIES:
            self._study_series.append((self._series_attrs, self._series_instances))
            self._current = self._study
        elif name == _STUDY:
            self._end_study()

    # ------------------------------------------------------------ the tree

    def _end_study(self) -> None:
        """Make the nodes of the study just read; each node's data holds its parents' attributes too."""
        study = self._node_study()
        for attributes, instances in self._study_series:
            series_data = {**self._study, **attributes}
            series = self._node_series(study, series_data)
            for instance in instances:
                self._add_instance(study, series, {**series_data, **instance})
        self._study_series = []

    def _node_study(self) -> MintStudy:
        uid = _uid(self._study.get(_STUDY_UID))
        if not uid:
            self._fail("a study has no StudyInstanceUID, which the study tree needs")
        study = self._studies.get(uid)
        if study is None:
            mint_uuid, last_modified = self._study_mint
            study = self._studies[uid] = MintStudy(
                uid, json_data=self._study, mint_uuid=mint_uuid, last_modified=last_modified
            )
        return study

    def _node_series(self, study: Study, data: dict[str, Any]) -> Series:
        uid = _uid(data.get(_SERIES_UID))
        if not uid:
            self._fail(f"a series of study {study.uid} has no SeriesInstanceUID, which the study tree needs")
        series = self._series.get((study.uid, uid))
        if series is None:
            series = self._series[(study.uid, uid)] = study.add(Series(uid, json_data=data))
        return series

    def _add_instance(self, study: Study, series: Series, data: dict[str, Any]) -> None:
        uid = _uid(data.get(_INSTANCE_UID))
        if not uid:
            self._fail(f"an instance of series {series.uid} has no SOPInstanceUID, which the study tree needs")
        key = ((study.uid, series.uid), uid)
        if key not in self._seen_instances:
            self._seen_instances.add(key)
            series.add(Instance(uid, json_data=data))


ValuesOf = Callable[[str], list[Any]]


@functools.lru_cache(maxsize=4096)
def _attribute_kind(tag: str, given_vr: str) -> tuple[str, str, ValuesOf | None] | None:
    """The tag as DICOM JSON spells it, its VR, and how its text becomes DICOM JSON values.

    None for a tag that is not 8 hex digits. The VR is the dictionary's, or
    the server's where the dictionary allows several (``US or SS``) or does
    not know the tag (private tags). The converter is None for text that is
    only split at backslashes.
    """
    if not is_hex_tag(tag):
        return None
    try:
        known: str = dictionary_VR(int(tag, 16))
    except KeyError:
        vr = given_vr or "UN"
    else:
        choices = known.split(" or ")
        vr = given_vr if given_vr in choices else choices[0]
    converter: ValuesOf | None = None
    if vr in _NO_TEXT_VRS:
        converter = _no_values
    elif vr == "PN":
        converter = _person_names
    elif vr in _INTEGER_VRS:
        converter = _integers
    elif vr in _DECIMAL_VRS:
        converter = _decimals
    return tag.upper(), vr, converter


def _no_values(text: str) -> list[Any]:
    return []


def _person_names(text: str) -> list[Any]:
    names = []
    for value in text.split("\\"):
        groups = zip(("Alphabetic", "Ideographic", "Phonetic"), value.split("="), strict=False)
        names.append({key: name for key, name in groups if name})
    return names


def _integers(text: str) -> list[Any]:
    return [int(value) if value.strip() else None for value in text.split("\\")]


def _decimals(text: str) -> list[Any]:
    return [float(value) if value.strip() else None for value in text.split("\\")]


def _uid(element: dict[str, Any] | None) -> str:
    if element is None:
        return ""
    values = element.get("Value")
    return values[0].strip("\x00 ") if values and isinstance(values[0], str) else ""


def _clark(name: str) -> str:
    namespace, _, local = name.rpartition(" ")
    return f"{{{namespace}}}{local}" if namespace else local

