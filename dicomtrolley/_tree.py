"""Group flat search results into the study -> series -> instance tree.

A search answers with one flat row per object at its query level: a QIDO-RS
response is a list of DICOM JSON objects, a C-FIND is a stream of identifier
Datasets. Both searchers hand their rows to this module, which groups them by
StudyInstanceUID, SeriesInstanceUID and SOPInstanceUID into
:class:`~dicomtrolley.core.Study`, :class:`~dicomtrolley.core.Series` and
:class:`~dicomtrolley.core.Instance` objects, so every searcher builds the same
tree by the same rules:

- The node at the query level gets the whole row as its data.
- A parent node made from rows of a finer level (the study of an instance-level
  search, say) gets the attributes of its own level and above from the first
  row that names it: patient and study attributes for a study; patient, study
  and series attributes for a series. That is what a search at the parent's
  level would have returned, and it keeps one instance's SOPInstanceUID out of
  its study's data.
- A row without a UID the tree needs raises
  :class:`~dicomtrolley.exceptions.MalformedResponseError` naming the source;
  no object is invented for it.
- A row repeated (e.g. by overlapping pages) is kept once, the first time.

DICOM JSON rows stay DICOM JSON: nodes get them as ``json_data`` and build
their pydicom Dataset only when ``.data`` is read, which keeps a 20,000-instance
answer fast to group.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from dicomtrolley.core import UID_KEYWORDS, DICOMObjectLevels, Instance, QueryLevels, Series, Study, is_hex_tag
from dicomtrolley.exceptions import MalformedResponseError

Row = TypeVar("Row")

STUDY_LEVEL_KEYWORDS: frozenset[str] = frozenset(
    {
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "StudyID",
        "StudyDescription",
        "AccessionNumber",
        "ReferringPhysicianName",
        "NameOfPhysiciansReadingStudy",
        "ModalitiesInStudy",
        "SOPClassesInStudy",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
        "ProcedureCodeSequence",
        "RequestedProcedureDescription",
        # Strictly an equipment (series) attribute, but Orthanc and many
        # archives keep and match it with the study.
        "InstitutionName",
    }
)
"""Study attributes (besides the patient ones, group 0010) that a study node keeps."""

SERIES_LEVEL_KEYWORDS: frozenset[str] = frozenset(
    {
        "SeriesInstanceUID",
        "SeriesNumber",
        "SeriesDescription",
        "SeriesDate",
        "SeriesTime",
        "Modality",
        "NumberOfSeriesRelatedInstances",
        "BodyPartExamined",
        "Laterality",
        "ProtocolName",
        "Manufacturer",
        "ManufacturerModelName",
        "StationName",
        "InstitutionalDepartmentName",
        "OperatorsName",
        "PerformingPhysicianName",
        "PerformedProcedureStepStartDate",
        "PerformedProcedureStepStartTime",
        "PerformedProcedureStepDescription",
        "RequestAttributesSequence",
        "FrameOfReferenceUID",
        "PatientPosition",
    }
)
"""Series attributes that a series node keeps (with the study ones)."""

_PATIENT_GROUP = 0x0010
_PATIENT_PREFIX = "0010"  # the same group, as DICOM JSON keys start
_CHARSET_TAG = 0x00080005  # SpecificCharacterSet: every subset keeps it, to decode its text


def _tags(keywords: Iterable[str]) -> frozenset[int]:
    tags = {tag_for_keyword(keyword) for keyword in keywords}
    if None in tags:
        raise ValueError(f"not DICOM keywords: {sorted(k for k in keywords if tag_for_keyword(k) is None)}")
    return frozenset(int(tag) for tag in tags if tag is not None)


_STUDY_TAGS = _tags(STUDY_LEVEL_KEYWORDS) | {_CHARSET_TAG}
_SERIES_TAGS = _tags(SERIES_LEVEL_KEYWORDS)
_STUDY_JSON_KEYS = frozenset(f"{tag:08X}" for tag in _STUDY_TAGS)
_SERIES_JSON_KEYS = _STUDY_JSON_KEYS | frozenset(f"{tag:08X}" for tag in _SERIES_TAGS)

# The three UIDs as DICOM JSON names them: 8 hex digits of the tag.
_STUDY_UID, _SERIES_UID, _INSTANCE_UID = (f"{tag_for_keyword(keyword):08X}" for keyword in UID_KEYWORDS)


def attribute_level(keyword: str) -> DICOMObjectLevels:
    """The level of the hierarchy a DICOM attribute describes.

    Patient attributes (group 0010) count as study attributes, as in the Study
    Root query model. Attributes this module does not list as study or series
    attributes are instance attributes. Searchers use it to refuse matching on
    an attribute finer than their query level.

    Parameters
    ----------
    keyword
        A DICOM keyword (``"PatientID"``) or an 8-hex-digit tag (``"00100020"``).
    """
    tag = tag_for_keyword(keyword)
    if tag is None:
        if not is_hex_tag(keyword):
            raise ValueError(f"{keyword!r} is not a DICOM keyword or an 8-hex-digit tag")
        tag = int(keyword, 16)
    if tag >> 16 == _PATIENT_GROUP or tag in _STUDY_TAGS:
        return DICOMObjectLevels.STUDY
    if tag in _SERIES_TAGS:
        return DICOMObjectLevels.SERIES
    return DICOMObjectLevels.INSTANCE


@contextmanager
def gc_paused() -> Iterator[None]:
    """Hold off the cyclic garbage collector while a large answer becomes objects.

    Building a million small dicts triggers many collections that find
    nothing to free; pausing them makes parsing a 20,000-instance answer
    (QIDO-RS JSON or MINT XML) several times faster (see docs/performance.md).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# ---------------------------------------------------------------- DICOM JSON


def tree_from_json(
    rows: Iterable[Any],
    level: QueryLevels,
    *,
    source: str,
    study_uid: str | None = None,
    series_uid: str | None = None,
) -> list[Study]:
    """Group DICOM JSON rows (one per object at ``level``) into studies.

    Parameters
    ----------
    rows
        Parsed DICOM JSON objects, as a QIDO-RS response holds them. Each is
        checked to be an object whose attributes are objects with a ``vr``.
    level
        The query level the rows answer: what each row describes.
    source
        Where the rows came from (a URL, without credentials), for error messages.
    study_uid, series_uid
        UIDs the request itself fixed (``/studies/{study}/series``): used for a
        row that leaves them out, as a hierarchical answer may.

    Returns
    -------
    list[Study]
        In the order of first appearance, with series and instances below
        them down to ``level``.

    Raises
    ------
    MalformedResponseError
        A row is not a DICOM JSON object, or lacks a UID the tree needs.
    """
    depth = level.object_level
    want_series = depth <= DICOMObjectLevels.SERIES
    want_instance = depth is DICOMObjectLevels.INSTANCE

    def keyed_rows() -> Iterator[tuple[int, str, str, str, dict[str, Any]]]:
        for index, row in enumerate(rows):
            try:
                for element in row.values():
                    element["vr"]  # a KeyError or TypeError unless it is an attribute object
            except AttributeError:
                raise MalformedResponseError(
                    f"Result {index} from {source} is not a DICOM JSON object: {_excerpt(row)}"
                ) from None
            except (KeyError, TypeError):
                bad = next(k for k, e in row.items() if not (isinstance(e, dict) and "vr" in e))
                raise MalformedResponseError(
                    f"Result {index} from {source}: attribute {bad} is not a DICOM JSON attribute "
                    f"(an object with a 'vr'): {_excerpt(row[bad])}"
                ) from None
            yield (
                index,
                _json_uid(row.get(_STUDY_UID)) or study_uid or "",
                (_json_uid(row.get(_SERIES_UID)) or series_uid or "") if want_series else "",
                _json_uid(row.get(_INSTANCE_UID)) if want_instance else "",
                row,
            )

    studies = _group(
        keyed_rows(),
        depth,
        source,
        parent_data=lambda row, keys: {
            "json_data": {k: v for k, v in row.items() if k in keys or k.startswith(_PATIENT_PREFIX)}
        },
        own_data=lambda row: {"json_data": row},
        make_instance=lambda uid, row: Instance(uid, json_data=row),
        study_keys=_STUDY_JSON_KEYS,
        series_keys=_SERIES_JSON_KEYS,
    )
    for study in studies:  # named if its JSON turns out malformed when first read
        study.json_source = source
        for series in study.series:
            series.json_source = source
            for instance in series.instances:
                instance.json_source = source
    return studies


def _json_uid(element: Any) -> str:
    """The first value of a DICOM JSON UI attribute, or '' when there is none."""
    if element is None:
        return ""
    values = element.get("Value")
    if type(values) is not list or not values:
        return ""
    uid = values[0]
    return uid if type(uid) is str else ""


def _excerpt(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# ---------------------------------------------------------------- Datasets


def tree_from_datasets(datasets: Iterable[Dataset], level: QueryLevels, *, source: str) -> list[Study]:
    """Group pydicom Datasets (one per object at ``level``, e.g. C-FIND identifiers) into studies.

    Parameters
    ----------
    datasets
        One Dataset per object found.
    level
        The query level the Datasets answer.
    source
        Where they came from (``"C-FIND ORTHANC@127.0.0.1:4242"``), for error messages.

    Returns
    -------
    list[Study]
        In the order of first appearance, down to ``level``.

    Raises
    ------
    MalformedResponseError
        A Dataset lacks a UID the tree needs.
    """
    depth = level.object_level
    want_series = depth <= DICOMObjectLevels.SERIES
    want_instance = depth is DICOMObjectLevels.INSTANCE

    def keyed_rows() -> Iterator[tuple[int, str, str, str, Dataset]]:
        for index, ds in enumerate(datasets):
            yield (
                index,
                _dataset_uid(ds, "StudyInstanceUID"),
                _dataset_uid(ds, "SeriesInstanceUID") if want_series else "",
                _dataset_uid(ds, "SOPInstanceUID") if want_instance else "",
                ds,
            )

    def subset(ds: Dataset, keys: frozenset[int]) -> dict[str, Any]:
        part = Dataset()
        for element in ds:
            tag: BaseTag = element.tag
            if tag >> 16 == _PATIENT_GROUP or tag in keys:
                part.add(element)
        return {"data": part}

    return _group(
        keyed_rows(),
        depth,
        source,
        parent_data=subset,
        own_data=lambda ds: {"data": ds},
        make_instance=lambda uid, ds: Instance(uid, ds),
        study_keys=_STUDY_TAGS,
        series_keys=_STUDY_TAGS | _SERIES_TAGS,
    )


def _dataset_uid(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return str(value).strip("\x00 ") if value else ""


# ---------------------------------------------------------------- grouping


def _group(
    keyed_rows: Iterable[tuple[int, str, str, str, Row]],
    depth: DICOMObjectLevels,
    source: str,
    *,
    parent_data: Callable[[Row, Any], dict[str, Any]],
    own_data: Callable[[Row], dict[str, Any]],
    make_instance: Callable[[str, Row], Instance],
    study_keys: Any,
    series_keys: Any,
) -> list[Study]:
    """The grouping both row types share; ``keyed_rows`` gives each row with its index and UIDs."""
    studies: dict[str, Study] = {}
    all_series: dict[tuple[str, str], Series] = {}
    seen_instances: set[tuple[str, str, str]] = set()
    at_study = depth is DICOMObjectLevels.STUDY
    at_series = depth is DICOMObjectLevels.SERIES
    for index, study_uid, series_uid, instance_uid, row in keyed_rows:
        if not study_uid:
            _missing(source, index, 0)
        study = studies.get(study_uid)
        if study is None:
            study = Study(study_uid, **(own_data(row) if at_study else parent_data(row, study_keys)))
            studies[study_uid] = study
        if at_study:
            continue
        if not series_uid:
            _missing(source, index, 1)
        series = all_series.get((study_uid, series_uid))
        if series is None:
            series = Series(series_uid, **(own_data(row) if at_series else parent_data(row, series_keys)))
            study.add(series)
            all_series[(study_uid, series_uid)] = series
        if at_series:
            continue
        if not instance_uid:
            _missing(source, index, 2)
        key = (study_uid, series_uid, instance_uid)
        if key in seen_instances:
            continue
        seen_instances.add(key)
        series.add(make_instance(instance_uid, row))
    return list(studies.values())


def _missing(source: str, index: int, which: int) -> None:
    raise MalformedResponseError(
        f"Result {index} from {source} has no {UID_KEYWORDS[which]}, which the study tree needs"
    )
