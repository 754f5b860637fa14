"""Pseudonymisation on the way to disk: research exports that never hold identifying data.

A :class:`Deidentifier` passed to :meth:`Trolley.download(..., deidentify=...)
<dicomtrolley.trolley.Trolley.download>` decodes each downloaded instance,
applies DICOM PS3.15 Annex E, the Basic Application Level Confidentiality
Profile with the options a research protocol picks, re-encodes it, and only
then hands it to storage. Identifiable bytes never reach the output folder,
not even as a temporary file there; the paths, the template and anything
storage writes see pseudonymised values only.

Every action comes from Table E.1-1 itself (edition 2026c, every row, at every
depth; :mod:`dicomtrolley._annex_e`), under the options of
:class:`DeidentifyOptions`: by default UIDs replaced, modified dates (each
patient's dates move back by the same number of days), patient
characteristics and device identity retained, descriptors cleaned of every
identifying value of the dataset, private attributes removed except those in
``keep_private_tags``. What the table does not name goes too when it can hold
text, unless a reviewed allow list keeps it.

Every pseudonym is a keyed function of the original: HMAC-SHA256 under a
secret key, so two runs, two machines and two batches give the same
PatientID, UIDs and date shift for the same input, and nobody without the key
can reverse or link them (the values are dicognito's, keyed).

The key comes from ``$DICOMTROLLEY_DEID_KEY``, a key file or the system
keyring (service ``dicomtrolley``, user ``deidentify``); it is never written
to outputs or logs. Needs ``pip install dicomtrolley[deidentify]``.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import io
import logging
import multiprocessing
import os
import sys
import threading
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import pydicom
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from dicomtrolley._annex_e import PRIVATE_TAG, Application, columns_of, parse_private_tag, rules_for
from dicomtrolley._annex_e_profile import declare_profile
from dicomtrolley._header import PREFIX_BYTES, pixel_data_span
from dicomtrolley._mapping import MappingTable as MappingTable
from dicomtrolley._mapping import originals_folder
from dicomtrolley._mapping import refuse_mapping_inside as refuse_mapping_inside
from dicomtrolley._originals import OriginalValues, Recorded, replaced, snapshot
from dicomtrolley._part10 import encode_part10
from dicomtrolley._processes import PendingCall, WorkerPool, WorkerStoppedError, process_context
from dicomtrolley._pseudonyms import Pseudonymiser
from dicomtrolley._spooled import SPILL_THRESHOLD, SpooledChunks, detached
from dicomtrolley.core import (
    FetchFailure,
    InstancePart,
    InstanceReference,
    PartSink,
    Quarantined,
    Reference,
    StudyReference,
)
from dicomtrolley.exceptions import (
    DeidentificationError,
    DeidentificationKeyError,
    InstanceQuarantinedError,
    StorageError,
)
from dicomtrolley.roles import Attributes, SavedInstance, Storage

logger = logging.getLogger(__name__)

KEY_VARIABLE = "DICOMTROLLEY_DEID_KEY"
"""The environment variable that holds the pseudonymisation key."""

KEYRING_SERVICE = "dicomtrolley"
KEYRING_USER = "deidentify"
"""Where the key is looked up in the system keyring: ``keyring set dicomtrolley deidentify``."""

MIN_KEY_BYTES = 16
"""A shorter key (under 128 bits) is refused: it could be guessed, and with it every pseudonym reversed."""

# ---------------------------------------------------------------- the key


def load_key(key_file: str | os.PathLike[str] | None = None) -> bytes:
    """The pseudonymisation key: from ``key_file``, else ``$DICOMTROLLEY_DEID_KEY``, else the keyring.

    A key file holds the key as text (surrounding whitespace is ignored);
    ``python -c "import secrets; print(secrets.token_hex(32))"`` makes a good one.

    Raises
    ------
    DeidentificationKeyError
        No key in any of those places, an unreadable key file, or a key
        shorter than :data:`MIN_KEY_BYTES`. The message never holds the key.
    """
    if key_file is not None:
        try:
            key = Path(key_file).read_bytes().strip()
        except OSError as error:
            raise DeidentificationKeyError(f"Cannot read the key file {key_file}: {error.strerror}") from None
        return _checked(key, f"the key file {key_file}")
    from_environment = os.environ.get(KEY_VARIABLE, "").strip()
    if from_environment:
        return _checked(from_environment.encode("utf-8"), f"${KEY_VARIABLE}")
    from_keyring = _keyring_key()
    if from_keyring:
        return _checked(from_keyring.strip().encode("utf-8"), "the keyring")
    raise DeidentificationKeyError(
        f"No pseudonymisation key: set ${KEY_VARIABLE}, name a key_file in the configuration, "
        f"or store one with `keyring set {KEYRING_SERVICE} {KEYRING_USER}`"
    )


def _checked(key: bytes, source: str) -> bytes:
    if len(key) < MIN_KEY_BYTES:
        raise DeidentificationKeyError(
            f"The pseudonymisation key from {source} is {len(key)} bytes; at least {MIN_KEY_BYTES} are needed"
        )
    return key


def _keyring_key() -> str | None:
    try:
        import keyring
        from keyring.errors import KeyringError
    except ImportError:
        return None
    try:
        return keyring.get_password(KEYRING_SERVICE, KEYRING_USER)
    except (KeyringError, RuntimeError) as error:  # no usable backend on a headless machine
        logger.debug("No key from the keyring: %s", error)
        return None


# ---------------------------------------------------------------- options


class DeidentifyOptions(BaseModel):
    """What a :class:`Deidentifier` does; every field is a key of the ``--deidentify`` TOML file.

    An empty file means these defaults. Unknown keys are an error, so a typo
    cannot silently fall back to a default.

    Parameters
    ----------
    key_file
        Read the key from this file instead of ``$DICOMTROLLEY_DEID_KEY`` or the keyring.
    max_date_shift_days
        Each patient's dates move back by 1 to this many days (a keyed function of the PatientID).
    keep_private_tags
        Private attributes to keep, as ``"gggg,PRIVATE CREATOR,ee"`` (group, creator, element
        within the creator's block), e.g. ``"0019,SIEMENS MR HEADER,0C"``. Kept as they are.
    allow_burned_in
        Write instances whose BurnedInAnnotation is YES instead of quarantining them.
    quarantine_sop_classes
        SOP classes held back because their pixels often carry burned-in text: a UID, or words of
        the SOP class's name (``"Ultrasound"``). Empty: quarantine none by class.
    mapping
        Write the table of original and pseudonymous PatientID, StudyInstanceUID, AccessionNumber
        and date shift (CSV) here; none when unset. It re-identifies: keep it where only those
        allowed to re-identify can read it.
    mapping_in_output
        Allow ``mapping`` inside the output folder (refused by default: the output folder is meant
        to hold only pseudonymised data).
    state_dir
        The state folder, outside the output folder, where the originals' identifying values are
        recorded for the audit (:mod:`dicomtrolley.audit`); default ``<output name>.state`` beside
        the mapping table, or beside the output folder without one (where an export keeps its
        state). It re-identifies, as the mapping table does.
    processes
        Worker processes that decode and re-encode instances (one core each); 0 or 1 works in the
        downloading thread. Defaults to the number of cores, at most 4.
    retain_modified_dates
        Retain Longitudinal Temporal Information with Modified Dates: dates move back by the patient's
        shift (times stay) instead of being removed or emptied.
    retain_patient_characteristics
        Retain Patient Characteristics: sex, age, size, weight, ethnic group, smoking and pregnancy status.
    retain_device_identity
        Retain Device Identity: station names, serial numbers, device IDs and labels.
    retain_institution_identity
        Retain Institution Identity: institution and department names and addresses (off: replaced or removed).
    clean_descriptors
        Clean Descriptors: descriptions and comments stay, with every identifying value of the dataset cut
        out (off: removed as the Basic Profile says).
    retain_uids
        Retain UIDs: study, series, instance and other UIDs keep their values (off: replaced by keyed UIDs).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    key_file: Path | None = None
    max_date_shift_days: int = Field(default=3650, ge=1, le=36500)
    keep_private_tags: tuple[str, ...] = ()
    allow_burned_in: bool = False
    quarantine_sop_classes: tuple[str, ...] = ("Secondary Capture", "Ultrasound", "US Volume")
    mapping: Path | None = None
    mapping_in_output: bool = False
    state_dir: Path | None = None
    processes: int = Field(default_factory=lambda: min(os.cpu_count() or 1, 4), ge=0, le=64)
    retain_modified_dates: bool = True
    retain_patient_characteristics: bool = True
    retain_device_identity: bool = True
    retain_institution_identity: bool = False
    clean_descriptors: bool = True
    retain_uids: bool = False

    @field_validator("keep_private_tags")
    @classmethod
    def _private_tag_form(cls, tags: tuple[str, ...]) -> tuple[str, ...]:
        for tag in tags:
            match = PRIVATE_TAG.match(tag)
            if not match or int(match.group(1), 16) % 2 == 0:
                raise ValueError(f"{tag!r} is not 'gggg,PRIVATE CREATOR,ee' with an odd group")
        return tags

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> DeidentifyOptions:
        """Read options from a TOML file; relative paths in it are relative to the file.

        Raises
        ------
        DeidentificationError
            The file cannot be read or parsed, or a key is unknown or has a wrong value
            (the message names the key).
        """
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # Python 3.10: the deidentify extra installs tomli
            import tomli as tomllib

        source = Path(path)
        try:
            raw = tomllib.loads(source.read_text(encoding="utf-8"))
        except OSError as error:
            raise DeidentificationError(f"Cannot read {source}: {error.strerror}") from None
        except tomllib.TOMLDecodeError as error:
            raise DeidentificationError(f"{source} is not valid TOML: {error}") from None
        try:
            options = cls.model_validate(raw)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: "
                + ("unknown option" if e["type"] == "extra_forbidden" else e["msg"])
                for e in error.errors()
            )
            raise DeidentificationError(f"{source}: {problems}") from None
        relative = {
            name: source.parent / value
            for name in ("key_file", "mapping", "state_dir")
            if (value := getattr(options, name)) is not None and not value.is_absolute()
        }
        return options.model_copy(update=relative)


# ---------------------------------------------------------------- pseudonymisation


@dataclass(frozen=True)
class Pseudonyms:
    """What one instance's identifiers became: a row of the mapping table."""

    patient_id: str
    pseudonymous_patient_id: str
    study_uid: str
    pseudonymous_study_uid: str
    accession_number: str
    pseudonymous_accession_number: str
    date_shift_days: int


class Deidentifier:
    """Pseudonymises datasets under a secret key; pass it to ``Trolley.download(..., deidentify=...)``.

    A plain object (options and key), so it pickles: a batch export can hand it
    to worker processes. Its pickle holds the key, so it is for handing over,
    never for writing to disk; its ``repr`` never shows the key.

    Parameters
    ----------
    options
        What to do; the defaults when omitted.
    key
        The secret key; by default :func:`load_key` finds it (``options.key_file``,
        ``$DICOMTROLLEY_DEID_KEY``, the keyring).

    Raises
    ------
    DeidentificationKeyError
        No key, or one too short; raised here, before anything is downloaded.
    ImportError
        dicognito is not installed (``pip install dicomtrolley[deidentify]``).

    Examples
    --------
    >>> deidentifier = Deidentifier(key="a secret of at least sixteen bytes")
    >>> deidentifier.date_shift_days("PAT001") == deidentifier.date_shift_days("PAT001")
    True
    """

    def __init__(self, options: DeidentifyOptions | None = None, *, key: bytes | str | None = None) -> None:
        self.options = options or DeidentifyOptions()
        if key is None:
            self._key = load_key(self.options.key_file)
        else:
            self._key = _checked(key.encode("utf-8") if isinstance(key, str) else bytes(key), "the key argument")
        _require_dicognito()
        self._keep = {parse_private_tag(tag) for tag in self.options.keep_private_tags}
        self._pseudonymiser = Pseudonymiser(self._key)
        self._rules = rules_for(columns_of(self.options))

    @classmethod
    def from_toml(
        cls,
        path: str | os.PathLike[str],
        *,
        mapping: str | os.PathLike[str] | None = None,
        mapping_in_output: bool | None = None,
        state_dir: str | os.PathLike[str] | None = None,
    ) -> Deidentifier:
        """A deidentifier with the options of a TOML file, and where the mapping table goes on top.

        Parameters
        ----------
        path
            The TOML file of :class:`DeidentifyOptions` (an empty file: the defaults).
        mapping, mapping_in_output, state_dir
            Override the file's (the command line's ``--mapping``, ``--mapping-in-output`` and
            ``--state-dir``); ``None`` keeps the file's.
        """
        options = DeidentifyOptions.from_toml(path)
        updates = {"mapping": mapping, "mapping_in_output": mapping_in_output, "state_dir": state_dir}
        given = {name: value for name, value in updates.items() if value is not None}
        return cls(DeidentifyOptions.model_validate({**options.model_dump(), **given}) if given else options)

    def __repr__(self) -> str:
        return f"Deidentifier({self.options!r})"

    def with_state_dir(self, state_dir: str | os.PathLike[str]) -> Deidentifier:
        """The same key and options, recording originals in ``state_dir``: what an export hands its studies."""
        return Deidentifier(self.options.model_copy(update={"state_dir": Path(state_dir)}), key=self._key)

    def __getstate__(self) -> dict[str, Any]:
        return {"options": self.options, "_key": self._key}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["options"], key=state["_key"])  # type: ignore[misc]

    # ------------------------------------------------------------ keyed values

    def _digest(self, purpose: str, value: str) -> bytes:
        return hmac.new(self._key, f"{purpose}\0{value}".encode(), hashlib.sha256).digest()

    def date_shift_days(self, patient_id: str) -> int:
        """How many days this patient's dates move back: 1 to ``max_date_shift_days``, the same on every run."""
        number = int.from_bytes(self._digest("date-shift", patient_id)[:8], "big")
        return 1 + number % self.options.max_date_shift_days

    # ------------------------------------------------------------ datasets

    def quarantine_reason(self, dataset: Dataset) -> str | None:
        """Why this instance must not be written (its pixels may show identities), or ``None``."""
        if not self.options.allow_burned_in and str(dataset.get("BurnedInAnnotation", "")).upper() == "YES":
            return "BurnedInAnnotation is YES"
        sop_class = str(dataset.get("SOPClassUID", ""))
        name = UID(sop_class).name if sop_class else ""
        for entry in self.options.quarantine_sop_classes:
            if entry == sop_class or (name and entry.lower() in name.lower()):
                return f"{name or sop_class} is quarantined: its pixels often carry burned-in text"
        return None

    def deidentify(self, dataset: Dataset) -> Pseudonyms:
        """Pseudonymise ``dataset`` in place (its file meta too); return what its identifiers became.

        Pixel data is left as it is: burned-in text is what :meth:`quarantine_reason` is for.
        """
        patient_id = str(dataset.get("PatientID", ""))
        study_uid = str(dataset.get("StudyInstanceUID", ""))
        accession = str(dataset.get("AccessionNumber", ""))
        shift = self.date_shift_days(patient_id)
        Application(self._rules, self._pseudonymiser, shift, self._keep).run(dataset)
        declare_profile(dataset, self._rules.columns)
        return Pseudonyms(
            patient_id, str(dataset.get("PatientID", "")),
            study_uid, str(dataset.get("StudyInstanceUID", "")),
            accession, str(dataset.get("AccessionNumber", "")),
            shift,
        )

    # ------------------------------------------------------------ storage

    def storage(self, storage: Storage) -> DeidentifyingStorage:
        """``storage`` (any :class:`~dicomtrolley.roles.Storage`), pseudonymising each instance before it gets it.

        Raises
        ------
        DeidentificationError
            The mapping table would be written inside the output folder, and
            ``mapping_in_output`` does not allow it; or the state folder would be.
        """
        return DeidentifyingStorage(storage, self)


def _require_dicognito() -> None:
    try:
        import dicognito.anonymizer  # noqa: F401 - loaded before worker processes fork
    except ImportError:
        raise ImportError("Pseudonymisation needs dicognito: pip install dicomtrolley[deidentify]") from None


# ---------------------------------------------------------------- one instance, bytes to bytes


@dataclass(frozen=True)
class _Outcome:
    """What pseudonymising one instance gave (small, so it crosses a process boundary cheaply)."""

    original: InstanceReference
    quarantine: str | None = None
    encoded: bytes = b""
    pseudonyms: Pseudonyms | None = None
    originals: tuple[Recorded, ...] = ()
    """The values pseudonymisation replaced or removed, for the audit (see :mod:`dicomtrolley._originals`)."""


def _pseudonymise(deidentifier: Deidentifier, data: bytes) -> _Outcome:
    """Decode, check, pseudonymise and re-encode an instance, or the part of it before its pixel data."""
    dataset = pydicom.dcmread(io.BytesIO(data), force=True)
    original = InstanceReference(
        str(dataset.get("StudyInstanceUID", "")), str(dataset.get("SeriesInstanceUID", "")),
        str(dataset.get("SOPInstanceUID", "")),
    )
    if not original.instance_uid or "TransferSyntaxUID" not in getattr(dataset, "file_meta", ()):
        raise InvalidDicomError("not a DICOM Part 10 instance: no SOPInstanceUID or no file meta information")
    reason = deidentifier.quarantine_reason(dataset)
    if reason is not None:
        return _Outcome(original, quarantine=reason)
    before = snapshot(dataset)
    pseudonyms = deidentifier.deidentify(dataset)
    originals = tuple(replaced(before, dataset))
    # As it was read: its preamble and file meta (whose group length is recomputed).
    return _Outcome(original, encoded=encode_part10(dataset), pseudonyms=pseudonyms, originals=originals)


_WORKER: Deidentifier | None = None


def _start_worker(deidentifier: Deidentifier) -> None:
    global _WORKER  # one per worker process, set at its start
    _WORKER = deidentifier
    # This process only pseudonymises: pydicom's checks of each value read and written
    # would warn about the server's data, not change what is written (and cost a tenth).
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE


def _pseudonymise_in_worker(data: bytes) -> _Outcome:
    assert _WORKER is not None, "worker process started without its deidentifier"
    return _pseudonymise(_WORKER, data)


def _head(body: IO[bytes]) -> bytes:
    """The bytes of an instance before its top-level pixel data: the part that is pseudonymised.

    Only they are decoded, pseudonymised and re-encoded; what follows them is
    copied as it came. The pixel data is looked for in the first bytes alone,
    so a large instance is never joined into one piece of memory. An instance
    the walk cannot split (encapsulated pixel data past those bytes, something
    after the pixel data, a layout left to pydicom) is its own head, whole.
    """
    size = body.seek(0, io.SEEK_END)
    body.seek(0)
    prefix = body.read(PREFIX_BYTES)
    span = pixel_data_span(prefix, size)
    if span is not None and span[1] == size:
        return prefix[:span[0]]
    return prefix + body.read()


# ---------------------------------------------------------------- on the way to disk


class DeidentifyingStorage(Storage):
    """A :class:`~dicomtrolley.roles.Storage` around any other: it pseudonymises each instance, then hands it on.

    The wrapped storage (a folder, another archive) sees pseudonymised values
    only: bytes, paths, and what it is asked it holds. :meth:`save` returns
    the instance's *original* reference (what the download asked for and
    checks arrival against) with the pseudonymised path. An instance to
    quarantine raises :class:`InstanceQuarantinedError` and is not written.
    The decoding and encoding run in a bounded pool of worker processes
    (``processes``), so several cores share them.

    Parameters
    ----------
    storage
        Where the pseudonymised instances go; its template sees pseudonymised values.
    deidentifier
        What pseudonymises them.

    Raises
    ------
    DeidentificationError
        The mapping table would be written inside the wrapped storage's folder, and
        ``mapping_in_output`` does not allow it; or the state folder lies inside it.
    """

    def __init__(self, storage: Storage, deidentifier: Deidentifier) -> None:
        self.storage = storage
        self.deidentifier = deidentifier
        refuse_mapping_inside(deidentifier.options, storage.folder)
        mapping = deidentifier.options.mapping
        self.mapping = MappingTable(mapping) if mapping is not None else None
        state = originals_folder(deidentifier.options.state_dir, mapping, storage.folder)
        self.originals = OriginalValues(state) if state is not None else None
        self.processes = deidentifier.options.processes
        self._pool: WorkerPool | None = None
        self._pool_lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"DeidentifyingStorage({self.storage!r})"

    @property
    def fields(self) -> tuple[str, ...]:
        """The wrapped storage's fields (given original values, it is asked with their pseudonyms)."""
        return self.storage.fields

    @property
    def folder(self) -> Path | None:
        """The wrapped storage's folder."""
        return self.storage.folder

    def may_hold(self, study_uids: Collection[str]) -> bool:
        """Asks the wrapped storage about the pseudonyms of these StudyInstanceUIDs (a keyed function of each)."""
        pseudonyms = [self._pseudonymise({"StudyInstanceUID": uid}) for uid in study_uids]
        return self.storage.may_hold([str(p.StudyInstanceUID) for p in pseudonyms if p is not None])

    def has(self, attributes: Attributes) -> bool:
        """True when the instance with these *original* attributes is complete on disk, pseudonymised.

        Pseudonyms are keyed functions of the originals, so the path can be
        computed without the file; a template of dates also needs the PatientID
        (for the date shift), and without it the instance is fetched again.
        """
        dataset = self._pseudonymised(attributes)
        return dataset is not None and self.storage.has(dataset)

    def held(self, study_uid: str) -> int | None:
        """Asks the wrapped storage how many instances it holds of this StudyInstanceUID's pseudonym."""
        pseudonym = self._pseudonymise({"StudyInstanceUID": study_uid})
        return None if pseudonym is None else self.storage.held(str(pseudonym.StudyInstanceUID))

    def locate(self, attributes: Attributes) -> str:
        """Where the instance with these *original* attributes goes, pseudonymised, relative to the wrapped storage.

        Raises
        ------
        StorageError
            The attributes lack a template field (or, for a template of dates, the
            PatientID), or the template gives an unsafe path.
        """
        dataset = self._pseudonymised(attributes)
        if dataset is None:
            raise StorageError(f"The pseudonymised path needs {', '.join(self.fields)} (and the PatientID)")
        return self.storage.locate(dataset)

    def _pseudonymised(self, attributes: Attributes) -> Dataset | None:
        """The template's fields, pseudonymised; None when a field (or the PatientID a date needs) is missing."""
        fields = set(self.fields)
        if any(attributes.get(name) in (None, "") for name in fields):
            return None
        return self._pseudonymise({name: attributes.get(name) for name in fields | {"PatientID", "PatientSex"}})

    def _pseudonymise(self, values: Mapping[str, Any]) -> Dataset | None:
        """A Dataset of these values (empty ones left out), pseudonymised; None when a date
        lacks the PatientID that its shift is a function of."""
        dataset = Dataset()
        dataset.file_meta = FileMetaDataset()
        for name, value in values.items():
            if value not in (None, ""):
                setattr(dataset, name, value.value if isinstance(value, DataElement) else value)
        if "PatientID" not in dataset and any(element.VR in ("DA", "DT", "TM") for element in dataset):
            return None
        self.deidentifier.deidentify(dataset)
        return dataset

    def save(self, part: InstancePart) -> SavedInstance:
        """Pseudonymise one instance and write it through the wrapped storage.

        Raises
        ------
        InstanceQuarantinedError
            The instance is held back (see :meth:`Deidentifier.quarantine_reason`); nothing is written.
        StorageError
            The bytes are not DICOM, or the wrapped storage could not write them.
        """
        try:
            head_size, outcome = self._outcome(part)
        except (InvalidDicomError, ValueError, KeyError, WorkerStoppedError) as error:
            raise StorageError(f"Cannot pseudonymise the downloaded bytes ({part.size} bytes): {error}") from error
        if outcome.quarantine is not None:
            logger.info("Quarantined %s: %s", outcome.original.instance_uid, outcome.quarantine)
            raise InstanceQuarantinedError(Quarantined(outcome.original, outcome.quarantine))
        if self.mapping is not None and outcome.pseudonyms is not None:
            self.mapping.add(outcome.pseudonyms)  # before the file, so every file written can be re-identified
        if self.originals is not None:  # before the file, so the audit knows what to look for in it
            self.originals.add(outcome.originals)
        body = SpooledChunks(SPILL_THRESHOLD)
        body.write(outcome.encoded)
        part.body.seek(head_size)
        body.write_from(part.body)  # the pixel data, by reference: not copied
        body.seek(0)
        try:
            saved = self.storage.save(
                InstancePart(body, body.seek(0, io.SEEK_END), part.content_type, part.source, None, part.headers)
            )
        finally:
            body.close()
        return replace(saved, reference=outcome.original)

    def _outcome(self, part: InstancePart) -> tuple[int, _Outcome]:
        """Pseudonymise the part's head (in a worker process if there are some): its length, and what it gave."""
        if isinstance(part, _SentPart):  # its head went to a worker as it arrived (see _ParallelSink)
            return part.head_size, part.pool.result(part.pending)
        head = _head(part.body)
        pool = self._worker_pool()
        return len(head), pool.call(head) if pool else _pseudonymise(self.deidentifier, head)

    def _worker_pool(self) -> WorkerPool | None:
        """The worker processes, started at first use; None to work in the calling thread."""
        if self.processes < 2:
            return None
        with self._pool_lock:
            if self._pool is None and not self._closed:
                # Forking a process that runs a single thread is safe (no lock can be held
                # by another thread) and starts workers at once; otherwise a fork server.
                # Either way the workers never import the caller's __main__ again: an unguarded
                # script would run itself once per worker (see dicomtrolley._processes).
                methods = multiprocessing.get_all_start_methods()
                single = threading.active_count() == 1 and "fork" in methods
                method = "fork" if single else "forkserver" if "forkserver" in methods else "spawn"
                context = process_context(method)
                if method == "forkserver":
                    multiprocessing.set_forkserver_preload([__name__])
                self._pool = WorkerPool(
                    self.processes, context, _pseudonymise_in_worker,
                    initializer=_start_worker, initargs=(self.deidentifier,), queued=_QUEUED_CALLS,
                )
            return self._pool

    def close(self) -> None:
        """Stop the worker processes and close the file of originals; a later :meth:`save` works in this thread."""
        with self._pool_lock:
            pool, self._pool, self._closed = self._pool, None, True
        if pool is not None:
            pool.close()
        if self.originals is not None:
            self.originals.close()

    def parallel(self, sink: PartSink, failures: list[FetchFailure]) -> _ParallelSink:
        """A sink that hands each part's header to a worker process and returns, so one stream keeps them all busy.

        ``sink`` runs later on each part, in the downloading thread, once its
        answer is back. Use it as a context manager around a fetch: on exit it
        saves the parts still waiting, stops the worker processes, and appends
        the parts whose ``sink`` raised to ``failures``.
        """
        return _ParallelSink(self, sink, failures)


_QUEUED_CALLS = 2
"""Instances a worker process holds: the one it works on and the next, waiting in its pipe."""

_PARTS_PER_PROCESS = _QUEUED_CALLS + 1
"""Parts waiting in memory per worker process: those it holds, and one whose save waits its turn."""


@dataclass(kw_only=True)
class _SentPart(InstancePart):
    """A part whose head a worker process already has: the call that will give its outcome."""

    head_size: int
    pool: WorkerPool = field(repr=False)
    pending: PendingCall = field(repr=False)


class _ParallelSink:
    """A part sink that sends each part's head to a worker process and writes the parts whose answers are back.

    No thread of its own: the downloading thread sends each head to a worker
    as the part arrives, and when the workers hold as many calls as they take
    (``_QUEUED_CALLS`` each) it first finishes the oldest part, taking its
    answer and calling ``sink`` on it. The workers stay busy with the calls
    they hold meanwhile. Handing parts to other threads cost the downloading
    process more in switching between threads than the work they did. Parts
    are written in the order they arrived; at most ``_PARTS_PER_PROCESS`` per
    worker wait in memory.
    """

    def __init__(self, storage: DeidentifyingStorage, sink: PartSink, failures: list[FetchFailure]) -> None:
        self._storage = storage
        self._sink = sink
        self._failures = failures
        self._depth = max(1, _PARTS_PER_PROCESS * storage.processes)
        self._capacity = max(1, _QUEUED_CALLS * storage.processes)  # calls the workers hold at once
        self._sent = 0  # calls sent whose parts are not saved yet
        self._waiting: collections.deque[InstancePart] = collections.deque()
        self._changed = threading.Condition()  # guards both, for the threads of a download
        self._errors: list[tuple[InstancePart, Exception]] = []

    def __enter__(self) -> PartSink:
        if self._storage.processes < 2:
            return self._sink
        self._storage._worker_pool()  # the workers start before the first part arrives
        return self

    def __call__(self, part: InstancePart) -> None:
        copy = detached(part)  # the downloader closes its part once this returns
        pool = self._storage._worker_pool()
        head = _head(copy.body) if pool is not None else b""
        if head:  # else its save finds the fault (no bytes), or works in this thread (no workers)
            assert pool is not None
            self._make_room()
            copy = _SentPart(
                copy.body, copy.size, copy.content_type, copy.source, copy.reference, copy.headers,
                head_size=len(head), pool=pool, pending=pool.submit(head),
            )
        with self._changed:
            self._waiting.append(copy)
            self._changed.notify()
        while len(self._waiting) > self._depth and self._finish_oldest():
            pass

    def _make_room(self) -> None:
        """Count one more call for the workers, first saving waiting parts while they hold all they take."""
        while True:
            with self._changed:
                while self._sent >= self._capacity and not self._waiting:
                    self._changed.wait()  # another thread is saving a part (or about to list one)
                if self._sent < self._capacity:
                    self._sent += 1
                    return
            self._finish_oldest()

    def _finish_oldest(self) -> bool:
        """Save the part that arrived first and is not saved yet; False when none waits."""
        with self._changed:
            if not self._waiting:
                return False
            part = self._waiting.popleft()
        try:
            self._sink(part)
        except Exception as error:  # noqa: BLE001 - listed as a failure of its target when the fetch ends
            with self._changed:
                self._errors.append((part, error))
        finally:
            part.close()
            if isinstance(part, _SentPart):
                part.pool.wait(part.pending)  # taken by its save, unless the sink never saved it
                with self._changed:
                    self._sent -= 1
                    self._changed.notify_all()
        return True

    def __exit__(self, *exc: object) -> None:
        try:
            while self._finish_oldest():
                pass
        finally:
            self._storage.close()
        for part, error in self._errors:
            target: Reference = part.reference or part.source or StudyReference("unknown")
            self._failures.append(FetchFailure(target, error))
        self._errors.clear()
