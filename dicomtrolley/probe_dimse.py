"""Ask a DIMSE server, cheaply and read-only, what it supports: C-ECHO, C-FIND levels, keys and cap, C-GET, C-MOVE.

The DIMSE half of ``dicomtrolley probe`` (:mod:`dicomtrolley.probe` is the
DICOMweb half; both fill one :class:`~dicomtrolley.probe.ProbeReport`). A
C-FIND here asks for everything at its level but reads only the first match
(at STUDY level, up to :data:`~dicomtrolley.probe_cap.CEILING`, to see a cap)
and then aborts the association, so a probe of a large archive costs little.
C-GET and C-MOVE retrieve one instance and drop it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import requests
from pydicom.dataset import Dataset

from dicomtrolley._dimse import STUDY_ROOT_FIND, DIMSEPeer, status_category
from dicomtrolley.core import InstancePart, InstanceReference
from dicomtrolley.exceptions import DICOMTrolleyError, DIMSEConnectionError
from dicomtrolley.probe import Finding, ProbeReport
from dicomtrolley.probe_cap import CEILING, check_cap
from dicomtrolley.profiles import DOWNLOADERS, ServerProfile

logger = logging.getLogger(__name__)

VERIFICATION = "1.2.840.10008.1.1"

RETURN_KEYS: Mapping[str, tuple[str, ...]] = {
    "STUDY": ("StudyInstanceUID", "PatientID", "PatientName", "StudyDate", "AccessionNumber",
              "ModalitiesInStudy", "StudyDescription", "NumberOfStudyRelatedInstances"),
    "SERIES": ("SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription",
               "NumberOfSeriesRelatedInstances"),
    "IMAGE": ("SOPInstanceUID", "SOPClassUID", "InstanceNumber"),
}
"""The keys each level's C-FIND asks to have returned; the probe reports which come back filled."""


def probe_dimse(profile: ServerProfile, report: ProbeReport | None = None) -> ProbeReport:
    """Ask the DIMSE server of ``profile`` what it supports; read-only.

    A refused association or C-ECHO is a finding like any other; the STUDY
    level C-FIND reads up to :data:`~dicomtrolley.probe_cap.CEILING` matches
    to see whether the server cuts its answers (kept as the report's
    ``c-find`` search cap when it does).

    Raises
    ------
    DIMSEConnectionError
        The server cannot be reached at all: nothing listens for the C-ECHO.
    """
    if profile.host is None or profile.port is None:
        raise DICOMTrolleyError(f"{profile}: no DIMSE host and port to probe")
    report = report if report is not None else ProbeReport(f"{profile.aec}@{profile.host}:{profile.port}")
    peer = DIMSEPeer(profile.host, profile.port, profile.aet, profile.aec,
                     acse_timeout=profile.connect_timeout, dimse_timeout=profile.read_timeout,
                     network_timeout=profile.read_timeout)
    _echo(peer, report)
    found: dict[str, str] = {}
    levels: tuple[tuple[str, tuple[str, ...]], ...] = (
        ("STUDY", ()), ("SERIES", ("StudyInstanceUID",)), ("IMAGE", ("StudyInstanceUID", "SeriesInstanceUID")),
    )
    for level, within in levels:
        keys = {key: found[key] for key in within if key in found}
        if len(keys) < len(within):
            report.findings.append(Finding(f"C-FIND {level}", None, "nothing found to search within"))
            continue
        matches = _find_level(peer, level, keys, report, most=CEILING if level == "STUDY" else 1)
        if matches:
            found.update({key: str(matches[0].get(key, "")) for key in RETURN_KEYS[level][:1]})
        if level == "STUDY" and matches:
            _cap(peer, matches, report)
    target = None
    if {"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"} <= set(found):
        target = InstanceReference(study_uid=found["StudyInstanceUID"], series_uid=found["SeriesInstanceUID"],
                                   instance_uid=found["SOPInstanceUID"])
    _retrieve("C-GET", "c-get", profile, target, report)
    if profile.move_port is None:
        report.findings.append(Finding("C-MOVE", None, "no move_port to receive on"))
    else:
        _retrieve("C-MOVE", "c-move", profile, target, report)
    return report


def _echo(peer: DIMSEPeer, report: ProbeReport) -> None:
    """A C-ECHO; a server that cannot be reached ends the probe, naming the step."""
    from pynetdicom import build_context

    try:
        with peer.associate(peer.application_entity(), [build_context(VERIFICATION)]) as assoc:
            answer = assoc.send_c_echo()
    except DIMSEConnectionError as error:
        raise DIMSEConnectionError(f"probe step 'C-ECHO': {error}") from error
    except DICOMTrolleyError as error:
        report.findings.append(Finding("C-ECHO", False, str(error)))
        return
    status = int(answer.Status) if "Status" in answer else None
    detail = "no answer" if status is None else f"status 0x{status:04X}"
    report.findings.append(Finding("C-ECHO", status == 0, detail))


def _find_level(peer: DIMSEPeer, level: str, keys: Mapping[str, str], report: ProbeReport,
                *, most: int) -> list[Dataset]:
    """Up to ``most`` matches of a C-FIND at ``level`` within ``keys``, reported with the return keys filled."""
    name = f"C-FIND {level}"
    matches, problem = _c_find(peer, _identifier(level, keys), most)
    if not matches:
        report.findings.append(Finding(name, not problem, problem or "no match"))
        return []
    filled = [key for key in RETURN_KEYS[level] if str(matches[0].get(key, "") or "")]
    report.findings.append(Finding(name, True, "returns " + ", ".join(filled)))
    return matches


def _cap(peer: DIMSEPeer, studies: list[Dataset], report: ProbeReport) -> None:
    """Whether the STUDY level answer was cut (:func:`~dicomtrolley.probe_cap.check_cap`); C-FIND cannot page."""

    def studies_in(date_range: str, most: int) -> set[str] | None:
        matches, problem = _c_find(peer, _identifier("STUDY", {"StudyDate": date_range}), most)
        return None if problem else {str(match.get("StudyInstanceUID", "")) for match in matches}

    answer = {str(study.get("StudyInstanceUID", "")): str(study.get("StudyDate", "") or "") for study in studies}
    check = check_cap(answer, studies_in)
    if check.cut:
        report.search_caps["c-find"] = check.found
        report.findings.append(Finding("C-FIND result cap", False, f"{check.detail}: searches over dates are split"))
    else:
        report.findings.append(Finding("C-FIND result cap", None if check.cut is None else True, check.detail))


def _identifier(level: str, keys: Mapping[str, str]) -> Dataset:
    """A C-FIND identifier at ``level``: ``keys`` matched, the level's :data:`RETURN_KEYS` asked for."""
    identifier = Dataset()
    identifier.QueryRetrieveLevel = level
    for key in (*RETURN_KEYS["STUDY"][:1], *RETURN_KEYS["SERIES"][:1], *RETURN_KEYS[level]):
        setattr(identifier, key, keys.get(key, ""))
    return identifier


def _c_find(peer: DIMSEPeer, identifier: Dataset, most: int) -> tuple[list[Dataset], str]:
    """Up to ``most`` matches of a Study Root C-FIND, and what went wrong ('' when nothing did).

    The association is aborted when the server still had matches to send.
    """
    from pynetdicom import build_context

    try:
        assoc = peer.open_association(peer.application_entity(), [build_context(STUDY_ROOT_FIND)])
    except DICOMTrolleyError as error:
        return [], str(error)
    matches: list[Dataset] = []
    problem = ""
    ended = False
    try:
        for status_ds, row in assoc.send_c_find(identifier, STUDY_ROOT_FIND):
            status = int(status_ds.Status) if "Status" in status_ds else None
            if status is None or status_category(status) != "Pending":
                ended = True
                problem = "" if status == 0 else ("no answer" if status is None else f"status 0x{status:04X}")
                break
            matches += [row] if row is not None else []
            if len(matches) >= most:
                break
    finally:
        peer.close_association(assoc, clean=ended)
    return matches, problem


def _retrieve(name: str, kind: str, profile: ServerProfile, target: InstanceReference | None,
              report: ProbeReport) -> None:
    """One instance through the package's own C-GET or C-MOVE downloader; the bytes are dropped."""
    if target is None:
        report.findings.append(Finding(name, None, "no instance found to retrieve"))
        return
    downloader = DOWNLOADERS[kind](profile, requests.Session())
    failures = downloader.fetch([target], InstancePart.close)
    detail = str(failures[0].error) if failures else "one instance retrieved"
    report.findings.append(Finding(name, not failures, detail[:200]))
