"""Ask a DIMSE server, cheaply and read-only, what it supports: C-ECHO, C-FIND levels and keys, C-GET, C-MOVE.

The DIMSE half of ``dicomtrolley probe`` (:mod:`dicomtrolley.probe` is the
DICOMweb half; both fill one :class:`~dicomtrolley.probe.ProbeReport`). A
C-FIND here asks for everything at its level but reads only the first match
and then aborts the association, so a probe of a large archive costs one
match per level. C-GET and C-MOVE retrieve that one instance and drop it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import requests
from pydicom.dataset import Dataset

from dicomtrolley._dimse import STUDY_ROOT_FIND, DIMSEPeer, status_category
from dicomtrolley.core import InstancePart, InstanceReference
from dicomtrolley.exceptions import DICOMTrolleyError
from dicomtrolley.probe import Finding, ProbeReport
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

    Raises
    ------
    DIMSEError
        The server cannot be reached at all, or refuses the association for C-ECHO.
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
        first = _first_match(peer, level, keys, report)
        if first is not None:
            found.update({key: str(first.get(key, "")) for key in RETURN_KEYS[level][:1]})
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
    from pynetdicom import build_context

    with peer.associate(peer.application_entity(), [build_context(VERIFICATION)]) as assoc:
        answer = assoc.send_c_echo()
    status = int(answer.Status) if "Status" in answer else None
    detail = "no answer" if status is None else f"status 0x{status:04X}"
    report.findings.append(Finding("C-ECHO", status == 0, detail))


def _first_match(peer: DIMSEPeer, level: str, keys: Mapping[str, str], report: ProbeReport) -> Dataset | None:
    """The first match of a C-FIND at ``level`` within ``keys``; the association is aborted after it."""
    from pynetdicom import build_context

    identifier = Dataset()
    identifier.QueryRetrieveLevel = level
    for key in (*RETURN_KEYS["STUDY"][:1], *RETURN_KEYS["SERIES"][:1], *RETURN_KEYS[level]):
        setattr(identifier, key, keys.get(key, ""))
    name = f"C-FIND {level}"
    try:
        assoc = peer.open_association(peer.application_entity(), [build_context(STUDY_ROOT_FIND)])
    except DICOMTrolleyError as error:
        report.findings.append(Finding(name, False, str(error)))
        return None
    first: Dataset | None = None
    detail = "no match"
    try:
        for status_ds, row in assoc.send_c_find(identifier, STUDY_ROOT_FIND):
            status = int(status_ds.Status) if "Status" in status_ds else None
            if status is None or status_category(status) != "Pending":
                detail = "no match" if status == 0 else ("no answer" if status is None else f"status 0x{status:04X}")
                break
            first = row
            break
    finally:
        peer.close_association(assoc, clean=first is None)
    if first is None:
        report.findings.append(Finding(name, detail == "no match", detail))
        return None
    filled = [key for key in RETURN_KEYS[level] if str(first.get(key, "") or "")]
    report.findings.append(Finding(name, True, "returns " + ", ".join(filled)))
    return first


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
