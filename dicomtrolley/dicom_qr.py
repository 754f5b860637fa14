"""Searching over DIMSE (PS3.4 Annex C): the C-FIND searcher.

:class:`DICOMQR` searches with C-FIND in the Study Root information model and
returns the same study tree as the other searchers. Associations, statuses
and AE titles are handled in :mod:`dicomtrolley._dimse`, which the C-GET and
C-MOVE downloaders of :mod:`dicomtrolley.dimse_retrieve` share; a failure
status, a refused association or a timeout raises
:class:`~dicomtrolley.exceptions.DIMSEError`, never an empty result.

pynetdicom is an optional dependency (``pip install dicomtrolley[dimse]``):
this module imports without it and says what to install when a searcher is
created.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from dicomtrolley._associations import Proposal
from dicomtrolley._dimse import RETRIEVE_LEVELS, STUDY_ROOT_FIND, DIMSEPeer, status_category, status_text
from dicomtrolley._tree import attribute_level, tree_from_datasets
from dicomtrolley.core import DICOMObjectLevels, ExtendedQuery, Query, QueryLevels, Study
from dicomtrolley.exceptions import DIMSEError, UnSupportedParameterError
from dicomtrolley.roles import ProfileParts, Searcher

if TYPE_CHECKING:
    from pynetdicom.association import Association

logger = logging.getLogger(__name__)

_LEVEL_ORDER = (DICOMObjectLevels.STUDY, DICOMObjectLevels.SERIES, DICOMObjectLevels.INSTANCE)

RETURN_KEYS: Mapping[DICOMObjectLevels, tuple[str, ...]] = {
    DICOMObjectLevels.STUDY: (
        "StudyInstanceUID", "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
        "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "StudyDescription",
        "ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
    ),
    DICOMObjectLevels.SERIES: (
        "SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription",
        "NumberOfSeriesRelatedInstances",
    ),
    DICOMObjectLevels.INSTANCE: ("SOPInstanceUID", "SOPClassUID", "InstanceNumber"),
}
"""What a C-FIND asks the server to return at each level, besides the matching keys.

C-FIND returns only the attributes it is asked for; a query at a level asks
for the keys of that level and of every level above it.
"""


# ---------------------------------------------------------------- C-FIND


class DICOMQR(DIMSEPeer, Searcher):
    """Searches a DICOM server with C-FIND (Study Root, STUDY / SERIES / IMAGE level).

    Each call opens one association, sends one C-FIND and releases it. Every
    :class:`~dicomtrolley.core.Query` field is sent as a matching key; a
    field C-FIND cannot express raises
    :class:`~dicomtrolley.exceptions.UnSupportedParameterError` instead of
    widening the search. Relational queries are proposed, so a SERIES or
    IMAGE query without a StudyInstanceUID works on servers that allow it.

    Parameters are those of :class:`~dicomtrolley._dimse.DIMSEPeer`.

    Examples
    --------
    >>> searcher = DICOMQR("pacs.example", 104, aet="MYSCU", aec="PACS")  # doctest: +SKIP
    >>> searcher.find_studies(Query(PatientID="PAT001"))  # doctest: +SKIP
    """

    def __repr__(self) -> str:
        return f"DICOMQR({self.host!r}, {self.port}, aet={self.aet!r}, aec={self.aec!r})"

    def describe(self) -> ProfileParts:
        """``searcher = "c-find"`` and the peer's address; see :meth:`Searcher.describe`."""
        return ProfileParts({"searcher": "c-find", **self.profile_address()})

    def find_studies(self, query: Query) -> list[Study]:
        """Every study matching ``query``, with series and instances down to its query level.

        Raises
        ------
        UnSupportedParameterError
            The query uses a field C-FIND cannot send at its level.
        DIMSEError
            The association failed or the server answered with a failure status.
        """
        rows = self.send_c_find(query)
        logger.debug("C-FIND at %s level on %s: %d match(es)", query.query_level.value, self.address, len(rows))
        return tree_from_datasets(rows, query.query_level, source=f"C-FIND {self.address}")

    def c_find(self, identifier: Dataset) -> list[Dataset]:
        """Send one Study Root C-FIND and return the identifiers of every match.

        Parameters
        ----------
        identifier
            The query: QueryRetrieveLevel, matching keys and (empty) return keys.

        Raises
        ------
        DIMSEError
            A failure, cancel or warning status (after a cancel or a warning the
            answer is incomplete: Orthanc cancels at its LimitFindResults), a
            timeout, or an aborted association.
        """
        what = f"C-FIND at {identifier.QueryRetrieveLevel} level on {self.address}"
        answer = self.run_pooled(FIND_PROPOSAL, partial(_collect, identifier=identifier), answered=_Answer.answered)
        rows, final = answer.rows, answer.final
        if answer.broken:
            raise DIMSEError(f"{what}: no answer within {self.dimse_timeout} s, or the association was aborted")
        if final is None:
            raise DIMSEError(f"{what}: the server sent no final status")
        status = int(final.Status)
        if status_category(status) != "Success":
            raise DIMSEError(
                f"{what} failed with status {status_text(final, 'find')}"
                + _hint_for_find(status, identifier, len(rows)),
                status=status,
            )
        return rows

    def send_c_find(self, query: Query) -> list[Dataset]:
        """The C-FIND answer to ``query`` as flat identifier Datasets, not yet a tree (4.x name).

        Raises
        ------
        UnSupportedParameterError, DIMSEError
            As :meth:`find_studies`.
        """
        return self.c_find(find_identifier(query))

    @staticmethod
    def parse_c_find_response(responses: Sequence[Dataset]) -> list[Study]:
        """Group C-FIND identifiers into the study tree, down to the finest level they name (4.x name).

        Raises
        ------
        MalformedResponseError
            A row lacks a UID its level needs.
        """
        level = QueryLevels.STUDY
        if any("SOPInstanceUID" in row for row in responses):
            level = QueryLevels.INSTANCE
        elif any("SeriesInstanceUID" in row for row in responses):
            level = QueryLevels.SERIES
        return tree_from_datasets(responses, level, source="C-FIND")


FIND_PROPOSAL = Proposal(((STUDY_ROOT_FIND, ()),), extended=((STUDY_ROOT_FIND, b"\x01"),), needs=STUDY_ROOT_FIND)
"""A C-FIND association: Study Root, with relational queries proposed (extended negotiation)."""


@dataclass
class _Answer:
    """What came back for one C-FIND: the matches, the final status, and whether the association broke."""

    rows: list[Dataset] = field(default_factory=list)
    final: Dataset | None = None
    broken: bool = False

    def answered(self) -> bool:
        """False when the association ended before any answer: a dropped, reused one is then replaced."""
        return self.final is not None or bool(self.rows)


def _collect(assoc: Association, *, identifier: Dataset) -> _Answer:
    """Send one C-FIND on ``assoc`` and gather its answer, stopping at the final status."""
    answer = _Answer()
    for status_ds, row in assoc.send_c_find(identifier, STUDY_ROOT_FIND):
        if "Status" not in status_ds:
            answer.broken = True  # pynetdicom's sign of a DIMSE timeout or an aborted association
            break
        if status_category(status_ds.Status) != "Pending":
            answer.final = status_ds
            break
        if row is not None:
            answer.rows.append(row)
    return answer


class DICOMQuery(ExtendedQuery):
    """A query with the matching fields 4.x's DICOM-QR searcher added (4.x name).

    Any :class:`~dicomtrolley.core.Query` works with :class:`DICOMQR`; this
    one also matches ProtocolName and StudyID.
    """

    ProtocolName: str = ""
    StudyID: str = ""

    def as_dataset(self) -> Dataset:
        """The C-FIND identifier this query sends."""
        return find_identifier(self)


def _hint_for_find(status: int, identifier: Dataset, matches: int) -> str:
    """Say what a failed C-FIND most likely means for the user."""
    if status_category(status) in ("Cancel", "Warning"):
        return (
            f" after {matches} match(es): the answer is incomplete (the server may cap how many "
            "results it returns); narrow the query"
        )
    if identifier.QueryRetrieveLevel != "STUDY" and not identifier.get("StudyInstanceUID"):
        return (
            ". Servers that only allow hierarchical queries need a StudyInstanceUID "
            "below the STUDY level"
        )
    return ""


def find_identifier(query: Query) -> Dataset:
    """The C-FIND identifier for ``query``: level, matching keys, return keys.

    Raises
    ------
    UnSupportedParameterError
        ``limit``/``offset`` (C-FIND cannot page), ``include_fields=["all"]``
        (C-FIND returns only what it names), or a field that belongs below the
        query level (e.g. ``Modality`` in a STUDY query; use ``ModalitiesInStudy``).
    """
    level = query.query_level.object_level
    if query.limit is not None or query.offset:
        raise UnSupportedParameterError(
            "C-FIND cannot page: limit and offset are not supported by DICOMQR"
        )
    if "all" in query.include_fields:
        raise UnSupportedParameterError(
            "C-FIND returns only the attributes it asks for: name them in include_fields instead of 'all'"
        )
    matching = query.attributes()
    for keyword in matching:
        key_level = attribute_level(keyword)
        if key_level < level:
            raise UnSupportedParameterError(
                f"{keyword} is a {key_level.name} attribute; a C-FIND at {query.query_level.value} level "
                f"cannot match on it (query at {key_level.name} level"
                + (", or use ModalitiesInStudy)" if keyword == "Modality" else ")")
            )
    identifier = Dataset()
    identifier.QueryRetrieveLevel = RETRIEVE_LEVELS[level]
    return_keys = [key for one in _LEVEL_ORDER if one >= level for key in RETURN_KEYS[one]]
    for name in [*return_keys, *query.include_fields]:
        _add_empty(identifier, name)
    for keyword, value in matching.items():
        # A Query lists UIDs with commas, as QIDO-RS does; C-FIND lists values with backslashes.
        setattr(identifier, keyword, value.split(",") if keyword.endswith("UID") and "," in value else value)
    date_range = query.study_date_range()
    if date_range:
        identifier.StudyDate = date_range
    if not all(value.isascii() for value in matching.values()):
        identifier.SpecificCharacterSet = "ISO_IR 192"
    return identifier


def _add_empty(identifier: Dataset, name: str) -> None:
    """Ask for an attribute by keyword or 8-hex tag: an empty element is a return key."""
    number = tag_for_keyword(name)
    tag = Tag(number if number is not None else int(name, 16))
    if tag in identifier:
        return
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        vr = "UN"  # a private tag: the server knows its VR, we need none to ask for it
    identifier.add_new(tag, vr, None)
