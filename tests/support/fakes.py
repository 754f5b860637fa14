"""In-memory stand-ins for a searcher, a downloader and a storage, over one small study.

They answer as a server would (series-level searches with instance counts,
instance-level searches with every instance; streams that can break), so the
trolley's and the planner's decisions can be tested without a server.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Collection, Sequence
from pathlib import Path

from keyring.backend import KeyringBackend
from pydicom.dataset import Dataset

from dicomtrolley import core
from dicomtrolley._concurrency import run_targets
from dicomtrolley._planning import covers
from dicomtrolley.exceptions import ConnectionFailedError, DICOMTrolleyError
from dicomtrolley.roles import Attributes, Downloader, SavedInstance, Searcher, Storage
from tests.support.dicom_files import dicom_bytes

STUDY = "1.1"
SERIES = {"1.1.1": ["1.1.1.1", "1.1.1.2", "1.1.1.3"], "1.1.2": ["1.1.2.1", "1.1.2.2"]}


def instance_bytes(series_uid: str, sop_uid: str) -> bytes:
    return dicom_bytes(sop_uid, study_uid=STUDY, series_uid=series_uid)


def all_instances() -> list[core.InstanceReference]:
    return [core.InstanceReference(STUDY, se, i) for se, ins in SERIES.items() for i in ins]


class FakeSearcher(Searcher):
    """Answers like a server: series with their instance counts at series level, instances at instance level."""

    def __init__(
        self, *, series_counts: bool = True, fail_at: core.QueryLevels | None = None, cap: int | None = None
    ) -> None:
        self.queries: list[core.Query] = []
        self.series_counts = series_counts
        self.fail_at = fail_at
        self.cap = cap  # instances an instance-level answer is cut at, silently; known as result_cap
        self.result_cap = cap

    def find_studies(self, query: core.Query) -> list[core.Study]:
        self.queries.append(query)
        if query.query_level == self.fail_at:
            raise DICOMTrolleyError(f"search at {query.query_level.value} level failed")
        wanted = set(filter(None, query.SeriesInstanceUID.split(",")))
        study = core.Study(STUDY)
        for series_uid, sops in SERIES.items():
            if wanted and series_uid not in wanted:
                continue
            series = study.add(core.Series(series_uid))
            if query.query_level == core.QueryLevels.SERIES:
                if self.series_counts:
                    series.data.NumberOfSeriesRelatedInstances = len(sops)
                continue
            for sop in sops[: self._room(study)]:
                ds = Dataset()
                ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = STUDY, series_uid, sop
                series.add(core.Instance(sop, ds))
        return [study] if query.StudyInstanceUID == STUDY else []

    def _room(self, study: core.Study) -> int | None:
        """How many more instances the answer may hold before the cap; None without one."""
        return None if self.cap is None else max(0, self.cap - len(study.all_instances()))

    @property
    def levels(self) -> list[core.QueryLevels]:
        return [query.query_level for query in self.queries]


class FakeDownloader(Downloader):
    """Serves SERIES; can break a study or series stream after some parts, like a dropped connection."""

    def __init__(
        self,
        break_after: dict[str, int] | None = None,
        leave_out: frozenset[str] = frozenset(),
        corrupt: frozenset[str] = frozenset(),
    ) -> None:
        self.requests: list[core.Reference] = []
        self.corrupt = corrupt  # instances sent as bytes that are no DICOM (a truncated deflated dataset)
        self.break_after = break_after or {}  # by the study or series UID of a request
        self.leave_out = leave_out  # instances a series answer silently lacks

    def fetch(
        self, targets: Sequence[core.Reference], sink: core.PartSink, *, stop_on_failure: bool = True
    ) -> list[core.FetchFailure]:
        return run_targets(targets, lambda t: self._one(t, sink), workers=2, stop_on_failure=stop_on_failure)

    def _one(self, target: core.Reference, sink: core.PartSink) -> None:
        self.requests.append(target)
        one_instance = isinstance(target, core.InstanceReference)
        members = [
            i for i in all_instances() if covers(target, i) and (i.instance_uid not in self.leave_out or one_instance)
        ]
        for count, instance in enumerate(members):
            uid = target.series_uid if isinstance(target, core.SeriesReference) else target.study_uid
            if not one_instance and self.break_after.get(uid) == count:
                raise ConnectionFailedError(f"connection reset while reading {target}")
            data = instance_bytes(instance.series_uid, instance.instance_uid)
            if instance.instance_uid in self.corrupt:
                data = data[:132] + b"\x02\x00\x10\x00UI\x16\x001.2.840.10008.1.2.1.99" + b"\x78\x9c\xff" * 9
            known = instance if one_instance else None
            sink(core.InstancePart(io.BytesIO(data), len(data), source=target, reference=known))


class MemoryStorage(Storage):
    """A :class:`Storage` of one's own: keeps each instance's bytes in a dict, by SOPInstanceUID (no folder)."""

    def __init__(self) -> None:
        self.held: dict[str, bytes] = {}
        self.asked: list[str] = []  # the SOPInstanceUIDs has() was asked about
        self._lock = threading.Lock()

    @property
    def fields(self) -> tuple[str, ...]:
        return ("SOPInstanceUID",)

    def may_hold(self, study_uids: Collection[str]) -> bool:
        return bool(self.held)

    def has(self, attributes: Attributes) -> bool:
        uid = str(attributes.get("SOPInstanceUID"))
        self.asked.append(uid)
        return uid in self.held

    def locate(self, attributes: Attributes) -> str:
        return f"memory/{attributes.get('SOPInstanceUID')}"

    def save(self, part: core.InstancePart) -> SavedInstance:
        part.body.seek(0)
        data = part.body.read()
        dataset = part.dataset()
        reference = core.InstanceReference(dataset.StudyInstanceUID, dataset.SeriesInstanceUID, dataset.SOPInstanceUID)
        with self._lock:
            self.held[reference.instance_uid] = data
        relative = self.locate(dataset)
        return SavedInstance(reference, Path(relative), len(data), "", {}, relative)


class MemoryKeyring(KeyringBackend):
    """A keyring that keeps its passwords in a dict (install with ``keyring.set_keyring``)."""

    priority = 1  # type: ignore[assignment]

    def __init__(self, passwords: dict[tuple[str, str], str]) -> None:
        super().__init__()
        self.passwords = passwords

    def get_password(self, service: str, username: str) -> str | None:
        return self.passwords.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.passwords[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.passwords.pop((service, username), None)
