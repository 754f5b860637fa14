"""Where downloaded instances go on disk.

A storage writes the bytes of an :class:`~dicomtrolley.core.InstancePart`
exactly as the server sent them (no parse and re-encode), under a path made
from the instance's own attributes:

- :class:`StorageDir` without a template keeps the public reference's layout,
  ``<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>`` with the dots of
  each UID written as underscores;
- a template such as ``"{PatientID}/{StudyDate}/{SeriesNumber:03d}_{Modality}/{InstanceNumber:05d}.dcm"``
  chooses any layout; format specs work on numeric attributes;
- :class:`FlatStorageDir` puts every file in one folder.

Each file is first written under a temporary name in its target folder and
renamed when complete, so a file under its final name is always whole. The
temporary name says who writes it (host and process id, see
:func:`temporary_name`); a process killed mid-write (``kill -9``, a crashed
worker) leaves its temporary behind, and the next storage that writes into
that folder removes the temporaries whose writer is gone (see
:func:`remove_stale_temporaries`). Values
are made safe for a path: they cannot add folders, climb out of the output
folder, or carry control characters.

Symbolic links: the output folder itself may be one. A link below it that
leads outside it (a study folder linked elsewhere) is refused with a
:class:`~dicomtrolley.exceptions.StorageError` before anything is written
through it, unless ``allow_links_outside=True``. A link at a file's final name
counts as "already on disk" only when it leads to a regular file inside the
output folder that is a readable DICOM instance with the same SOPInstanceUID;
otherwise the download replaces the link (never what it points to).
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import errno
import hashlib
import itertools
import logging
import os
import re
import socket
import stat
import string
import threading
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import IO, Any

from pydicom.datadict import keyword_dict
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.uid import ExplicitVRLittleEndian

from dicomtrolley._header import Header, read_header
from dicomtrolley._paths import lies_inside
from dicomtrolley._spooled import copy_to_descriptor
from dicomtrolley.core import UID_KEYWORDS, InstancePart, InstanceReference
from dicomtrolley.exceptions import (
    HeaderError,
    OutputFolderError,
    StorageCollisionError,
    StorageError,
    TemplateError,
)
from dicomtrolley.roles import Attributes, SavedInstance, Storage, encode_dataset

__all__ = [
    "INDEX_KEYWORDS",
    "PLACEHOLDER",
    "TEMPORARY_SUFFIX",
    "DICOMDiskStorage",
    "FlatStorageDir",
    "PathTemplate",
    "SavedInstance",
    "Storage",
    "StorageDir",
    "check_output_folder",
    "make_writable",
    "read_header_of_file",
    "remove_stale_temporaries",
    "safe_segment",
    "temporary_name",
]

logger = logging.getLogger(__name__)

PLACEHOLDER = "unknown"
"""What an empty or missing attribute becomes in a path."""

TEMPORARY_SUFFIX = ".dicomtrolley-partial"
"""Files being written carry this suffix (and a leading dot) until they are complete."""

INDEX_KEYWORDS: tuple[str, ...] = (
    *UID_KEYWORDS, "PatientID", "StudyDate", "Modality", "SeriesNumber", "InstanceNumber",
)
"""The attributes every save reads and hands back in :attr:`SavedInstance.attributes`:
the UIDs that name the instance, and what an index of written files lists."""

_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]")
_MAX_SEGMENT_BYTES = 200
_PLAIN_SEGMENT = re.compile(rf"[0-9A-Za-z._+-]{{1,{_MAX_SEGMENT_BYTES}}}")
"""Values :func:`safe_segment` keeps as they are: printable ASCII without separators, short enough."""


def safe_segment(value: str) -> str:
    """Make one attribute value safe to stand in a file or folder name.

    Separators, control and reserved characters become ``_``; a value of only
    dots (``..``) cannot climb; an empty value becomes :data:`PLACEHOLDER`;
    long values are cut to fit file-name limits.

    Examples
    --------
    >>> safe_segment("../../etc")
    '.._.._etc'
    >>> safe_segment("..")
    '__'
    >>> safe_segment("  ")
    'unknown'
    """
    if _PLAIN_SEGMENT.fullmatch(value) and value.strip("."):
        return value  # the common case (a UID, a number, a code): nothing to change
    cleaned = _UNSAFE.sub("_", value).strip()
    if not cleaned:
        return PLACEHOLDER
    if set(cleaned) == {"."}:
        return "_" * len(cleaned)
    encoded = cleaned.encode("utf-8")[:_MAX_SEGMENT_BYTES]
    return encoded.decode("utf-8", "ignore")


def _plain_value(value: Any) -> Any:
    """An attribute value as a str, int or float that ``format`` understands."""
    if isinstance(value, MultiValue):
        return "_".join(str(v) for v in value)
    if isinstance(value, int):
        return int(value)  # IS and plain ints
    if isinstance(value, float):
        return float(value)  # DS
    return str(value)


def _closest(name: str) -> str:
    """``; did you mean X?`` for the DICOM keyword nearest to a mistyped one, or nothing."""
    by_case = {keyword.lower(): keyword for keyword in keyword_dict}
    match = by_case.get(name.lower())
    if match is None:
        close = difflib.get_close_matches(name, keyword_dict, n=1, cutoff=0.75)
        match = close[0] if close else None
    return f"; did you mean {match}?" if match else ""


class PathTemplate:
    """Turns an instance's attributes into a relative path.

    Parameters
    ----------
    template
        A ``str.format`` pattern over DICOM keywords, folders separated by ``/``.
    uid_underscores
        Write the dots of ``...UID`` attributes as underscores (the reference's layout).

    Raises
    ------
    TemplateError
        Unbalanced braces, no field, or a field that is not a keyword of
        pydicom's DICOM dictionary (the closest one is suggested): checked
        here, so a typo costs no download.
    """

    def __init__(self, template: str, *, uid_underscores: bool = False) -> None:
        self.template = template
        self.uid_underscores = uid_underscores
        try:
            self._pieces = list(string.Formatter().parse(template))
        except ValueError as error:  # an unbalanced brace
            raise TemplateError(f"Template {template!r}: {error}") from error
        self.fields = tuple(name for _, name, _, _ in self._pieces if name)
        if not self.fields:
            raise TemplateError(f"Template {template!r} names no attribute, so every file would collide")
        if any(not name.isidentifier() for name in self.fields):
            raise TemplateError(f"Template {template!r}: fields must be plain DICOM keywords")
        for name in self.fields:
            if name not in keyword_dict:
                raise TemplateError(f"Template {template!r}: {name!r} is not a DICOM keyword{_closest(name)}")

    def render(self, attributes: Mapping[str, Any] | Dataset) -> Path:
        """The relative path for an instance with these attributes."""
        return Path(self.render_text(attributes))

    def render_text(self, attributes: Mapping[str, Any] | Dataset) -> str:
        """:meth:`render` as text, folders separated by ``/`` (no path object made)."""
        text = []
        for literal, name, spec, conversion in self._pieces:
            text.append(literal)
            if name:
                text.append(safe_segment(self._field(attributes, name, spec or "", conversion)))
        relative = "".join(text)
        if any(seg in ("", ".", "..") for seg in relative.split("/")):
            raise StorageError(f"Template {self.template!r} gives an unsafe path {relative!r}")
        return relative

    def _field(
        self, attributes: Mapping[str, Any] | Dataset, name: str, spec: str, conversion: str | None
    ) -> str:
        raw = attributes.get(name)
        if raw is None or raw == "":
            return PLACEHOLDER
        value = _plain_value(raw)
        if self.uid_underscores and name.endswith("UID"):
            value = str(value).replace(".", "_")
        if conversion:
            value = str(value) if conversion == "s" else repr(value)
        try:
            return format(value, spec)
        except ValueError:
            # A numeric spec on a text value, e.g. {SeriesNumber:03d} when the server sent "3".
            try:
                return format(int(str(value)), spec)
            except ValueError:
                return str(value)


class DICOMDiskStorage(ABC):
    """Something that writes parsed pydicom Datasets to disk: 4.x's extension point for storage.

    Subclass it and implement :meth:`save` to choose paths or formats of your
    own; pass an instance as ``Trolley(storage=...)``. The trolley then parses
    every instance into a Dataset and calls ``save(dataset, output_dir)``,
    which is slower than :class:`StorageDir` (it writes the bytes as they
    arrive, without parsing them) and gives up resume and the byte-exact copy.
    For another layout, a :class:`StorageDir` template is usually enough.
    """

    @abstractmethod
    def save(self, dataset: Dataset, path: str | os.PathLike[str] | None = None) -> object:
        """Write one dataset, under ``path`` (the download's output folder) when given."""


class StorageDir(Storage):
    """Writes instances under a folder, in a layout chosen by a template: the :class:`Storage` of files.

    Parameters
    ----------
    path
        The output folder; created when needed.
    template
        A :class:`PathTemplate` pattern. Without one, the reference's layout
        ``<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>`` (dots as underscores).
    allow_links_outside
        Write through symbolic links below the output folder that lead outside it
        (refused by default, so a planted link cannot redirect a download).
    """

    default_template = "{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}"

    def __init__(
        self, path: str | os.PathLike[str], template: str | None = None, *, allow_links_outside: bool = False
    ) -> None:
        self.path = Path(path)
        self.allow_links_outside = allow_links_outside
        self.template = PathTemplate(template or self.default_template, uid_underscores=template is None)
        self._claimed: dict[str, str] = {}  # final path -> the SOPInstanceUID written there
        self._folders: dict[str, Path] = {}  # folders written to, by their path below self.path
        self._inside: set[Path] = set()  # folders checked to lead nowhere outside
        self._lock = threading.Lock()

    @property
    def fields(self) -> tuple[str, ...]:
        """The attributes the template names: what :meth:`has` and :meth:`locate` need."""
        return self.template.fields

    @property
    def folder(self) -> Path:
        """The output folder."""
        return self.path

    @property
    def _header_keywords(self) -> tuple[str, ...]:
        """What :meth:`save` reads of each instance: :data:`INDEX_KEYWORDS` and the template's fields."""
        return (*INDEX_KEYWORDS, *self.template.fields)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, template={self.template.template!r})"

    def at(self, path: str | os.PathLike[str]) -> StorageDir:
        """The same layout under another folder."""
        clone = copy.copy(self)
        clone.path = Path(path)
        clone._claimed = {}
        clone._folders = {}
        clone._inside = set()
        clone._lock = threading.Lock()
        return clone

    def locate(self, attributes: Attributes) -> str:
        """The path, relative to the output folder, that an instance with these attributes is written to.

        Raises
        ------
        StorageError
            The template gives an unsafe path.
        """
        # render_text() makes every value a single safe segment and refuses empty,
        # "." and ".." segments, so the path stays below self.path without
        # asking the file system (resolve() costs several lstat calls a file).
        return self.template.render_text(attributes)

    def path_for(self, attributes: Attributes) -> Path:
        """The path below the output folder that an instance with these attributes is written to.

        Raises
        ------
        StorageError
            The template gives an unsafe path.
        """
        return self.path / self.locate(attributes)

    def is_occupied(self) -> bool:
        """True when the output folder exists and holds anything."""
        try:
            with os.scandir(self.path) as entries:
                return next(entries, None) is not None
        except (FileNotFoundError, NotADirectoryError):
            return False

    def may_hold(self, study_uids: Collection[str]) -> bool:
        """False when nothing of these studies can be on disk yet, so no file needs checking.

        A layout whose first folder is the StudyInstanceUID (the default one)
        looks for those folders: in a batch export into one folder, a study not
        yet begun is then fetched as fast as into an empty folder. Other
        layouts ask whether the output folder holds anything at all.
        """
        if not self.template.template.startswith("{StudyInstanceUID}/"):
            return self.is_occupied()
        underscores = self.template.uid_underscores
        return any(
            (self.path / safe_segment(uid.replace(".", "_") if underscores else uid)).exists() for uid in study_uids
        )

    def has(self, attributes: Attributes) -> bool:
        """True when this instance is already complete on disk.

        Needs every attribute the template names; a file under its final name
        is always complete, because files are renamed only when whole.
        """
        if any(attributes.get(name) in (None, "") for name in self.template.fields):
            return False
        path = self.path_for(attributes)
        try:
            mode = os.lstat(path).st_mode
        except (FileNotFoundError, NotADirectoryError):
            return False
        if stat.S_ISLNK(mode):
            return self._link_holds(path, str(attributes.get("SOPInstanceUID") or ""))
        if not stat.S_ISREG(mode):
            return False
        try:
            self._check_inside(path.parent)  # a file reached through a link outside is not ours
        except StorageError:
            return False
        return True

    def _link_holds(self, link: Path, sop_uid: str) -> bool:
        """A link at a final name counts when it leads to this instance, complete, inside the output folder."""
        try:
            target = link.resolve(strict=True)
            if not target.is_relative_to(self.path.resolve()) or not target.is_file():
                return False
            found = read_header_of_file(target, ["SOPInstanceUID"])
        except (OSError, RuntimeError, StorageError):  # RuntimeError: a link loop
            return False
        uid = found.text("SOPInstanceUID") or found.media_sop_instance_uid
        return bool(uid) and (not sop_uid or uid == sop_uid)

    def _check_inside(self, folder: Path) -> None:
        """Refuse a folder that an existing link below the output folder leads outside it."""
        if self.allow_links_outside or folder in self._inside:
            return
        existing = folder
        while existing != self.path and not os.path.lexists(existing):
            existing = existing.parent
        if existing == self.path:
            return  # nothing below the output folder exists yet on the way: no link to follow
        if not lies_inside(existing, self.path):
            raise StorageError(
                f"{existing} is a link that leads outside the output folder {self.path}; "
                "remove it, or pass allow_links_outside=True"
            )
        if existing == folder:
            self._inside.add(folder)  # a folder still to be made is checked again once it exists

    def generate_path(self, dataset: Dataset | Mapping[str, Any]) -> Path:
        """The path, relative to the output folder, of an instance with these attributes (4.x name)."""
        return self.template.render(dataset)

    def save(self, part: InstancePart) -> SavedInstance:
        """Write one instance's bytes, as they are, to its path; atomically.

        A pydicom Dataset given here, as 4.x scripts do, goes to :meth:`save_dataset`.

        Raises
        ------
        StorageError
            The bytes are not DICOM, the disk is full, or the folder is not writable.
        StorageCollisionError
            Another instance already maps to the same path.
        """
        if isinstance(part, Dataset):
            return self.save_dataset(part)
        header = _read_header(part.body, self._header_keywords, name=_name(part))
        sop_uid = header.text("SOPInstanceUID") or header.media_sop_instance_uid
        if not sop_uid:
            raise StorageError(
                f"Downloaded bytes are not a readable DICOM instance: no SOPInstanceUID ({part.size} bytes)"
            )
        # Paths as text until the end: each pathlib object costs microseconds, per instance.
        relative = self.template.render_text(header.attributes)
        folder_text, _, name = relative.rpartition("/")
        folder = self._folders.get(folder_text)
        first_in_folder = folder is None
        if folder is None:
            folder = self.path / folder_text
            self._check_inside(folder)
            remove_stale_temporaries(folder)
        target = os.path.join(folder, name)
        self._claim(target, sop_uid)
        _write_atomically(part.body, target, make_folder=first_in_folder)
        self._folders[folder_text] = folder
        reference = InstanceReference(header.text("StudyInstanceUID"), header.text("SeriesInstanceUID"), sop_uid)
        logger.debug("Wrote %s (%d bytes)", target, part.size)
        return SavedInstance(
            reference, folder / name, part.size, header.transfer_syntax, header.attributes, relative=relative
        )

    def save_dataset(self, dataset: Dataset, path: str | os.PathLike[str] | None = None) -> SavedInstance:
        """Encode a pydicom Dataset and write it at :meth:`generate_path`, atomically (4.x's ``save``).

        Slower than :meth:`save`, and not the server's bytes: a Dataset with a
        transfer syntax in its file meta becomes a Part-10 file, one without
        is written as it is, as 4.x did.

        Parameters
        ----------
        dataset
            What to write.
        path
            Another output folder for this one write (4.x's argument); this storage's folder if None.

        Raises
        ------
        StorageError
            The dataset cannot be encoded, or the file not written.
        StorageCollisionError
            Another instance already maps to the same path.
        """
        if path is not None:
            return self.at(path).save_dataset(dataset)
        body = encode_dataset(dataset)
        relative = self.generate_path(dataset)
        target = self.path / relative
        self._check_inside(target.parent)
        remove_stale_temporaries(target.parent)
        sop_uid = str(dataset.get("SOPInstanceUID", ""))
        self._claim(str(target), sop_uid)
        _write_atomically(body, str(target), make_folder=True)
        reference = InstanceReference(
            str(dataset.get("StudyInstanceUID", "")), str(dataset.get("SeriesInstanceUID", "")), sop_uid
        )
        transfer_syntax = dataset.file_meta.get("TransferSyntaxUID", "") if hasattr(dataset, "file_meta") else ""
        return SavedInstance(
            reference, target, body.getbuffer().nbytes, str(transfer_syntax), relative=Path(relative).as_posix()
        )

    def _claim(self, target: str, sop_uid: str) -> None:
        with self._lock:
            owner = self._claimed.get(target)
            try:
                # Only a regular file has an owner: a link there is replaced, never followed.
                if owner is None and _is_regular_file(target):
                    owner = read_header_of_file(Path(target), ["SOPInstanceUID"]).text("SOPInstanceUID")
            except OSError as error:
                raise StorageError(f"Could not read {target}: {error}") from error
            if owner and owner != sop_uid:
                raise StorageCollisionError(
                    f"Instances {owner} and {sop_uid} both map to {target}; "
                    "add an attribute such as {SOPInstanceUID} to the template"
                )
            self._claimed[target] = sop_uid


def _is_regular_file(path: str) -> bool:
    """True for a regular file at ``path`` itself (a link is none); one ``lstat``."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False


def make_writable(dataset: Dataset) -> Dataset:
    """Make a Dataset built from DICOM JSON (WADO-RS metadata, a search result) savable with ``save_as``.

    Gives it file meta information (Explicit VR Little Endian) and drops the
    elements pydicom cannot encode: UN elements whose value was decoded into
    something other than bytes, which some servers' metadata contains.
    Changes ``dataset`` in place and returns it (4.x's function).
    """
    file_meta = FileMetaDataset()
    if "SOPClassUID" in dataset:
        file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    if "SOPInstanceUID" in dataset:
        file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.file_meta = file_meta
    for element in list(dataset):
        if element.VR == "UN" and not isinstance(element.value, (bytes, str, type(None))):
            logger.debug("Dropping %s: VR UN with a decoded value cannot be written", element.tag)
            del dataset[element.tag]
    return dataset


DICOMDiskStorage.register(StorageDir)  # a StorageDir is a DICOMDiskStorage, as in 4.x


class FlatStorageDir(StorageDir):
    """Writes every instance into one folder, named by its SOPInstanceUID (dots as underscores)."""

    default_template = "{SOPInstanceUID}"


def _name(part: InstancePart) -> str:
    """The instance a part holds, as well as it is known before its header is read."""
    if part.reference is not None:
        return f"instance {part.reference.instance_uid}"
    return f"an instance of {part.source}" if part.source is not None else "an instance"


def read_header_of_file(path: Path, keywords: Collection[str]) -> Header:
    """:func:`~dicomtrolley._header.read_header` for a file on disk."""
    with path.open("rb") as file:
        return _read_header(file, keywords, name=str(path))


def _read_header(body: IO[bytes], keywords: Collection[str], *, name: str) -> Header:
    """:func:`~dicomtrolley._header.read_header`, its error a :class:`StorageError`: nothing can be saved."""
    try:
        return read_header(body, keywords, name=name)
    except HeaderError as error:
        raise StorageError(str(error)) from error


_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
"""This machine in temporary names: a short hash of its host name (the names of a shared folder stay short)."""


def _writer() -> str:
    """Who writes a temporary file: this host and process, as ``<host>-<pid>``."""
    return f"{_HOST}-{os.getpid()}"


def temporary_name(target: str | os.PathLike[str]) -> str:
    """The start of the name a file is written under before it becomes ``target``.

    ``.<name>.<host>-<pid>.``: the writer adds a serial number and
    :data:`TEMPORARY_SUFFIX`, so every writer (thread, process, machine)
    has names of its own, and the name says whether its writer still runs.
    """
    return f".{os.path.basename(target)}.{_writer()}."


_TEMPORARY = re.compile(r"\.(?P<host>[0-9a-f]{8})-(?P<pid>[0-9]+)\.[^.]+" + re.escape(TEMPORARY_SUFFIX) + "$")


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the temporary files in ``folder`` whose writer is gone; return them.

    A process killed while it writes (``kill -9``, a worker the OOM killer
    ends) cannot remove its temporary file. A temporary counts as stale only
    when its name says it was written on this machine by a process that no
    longer exists: one of a running writer, on any thread, process or
    machine, is never touched (its rename would fail). A process id used
    again since, a temporary of another machine, and names of older versions
    stay; they are hidden files that nothing reads. Not on Windows, where
    asking whether a process exists this way would end it.
    """
    removed: list[Path] = []
    if os.name != "posix":
        return removed
    try:
        with os.scandir(folder) as entries:
            names = [e.name for e in entries if e.name.endswith(TEMPORARY_SUFFIX)]
    except (FileNotFoundError, NotADirectoryError):
        return removed
    except OSError as error:
        raise StorageError(f"Could not list {folder}: {error}") from error
    for name in names:
        match = _TEMPORARY.search(name)
        if match is None or match["host"] != _HOST or _process_exists(int(match["pid"])):
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(folder / name)
            removed.append(folder / name)
            logger.info("Removed %s, left by a writer that was killed", folder / name)
    return removed


def _process_exists(pid: int) -> bool:
    """True when a process with this id runs on this machine (signal 0 only asks)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's
        return True
    return True


_SERIAL = itertools.count()
"""Numbers the temporary files of this process (``next`` on a count is atomic in CPython)."""

_CREATE_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def _create_temporary(target: str) -> tuple[int, str]:
    """A new file beside ``target``, readable by its owner only (as ``mkstemp`` makes it): its descriptor and path.

    Named :func:`temporary_name` + a serial number + :data:`TEMPORARY_SUFFIX`;
    a name left by an earlier process with the same id is stepped over.
    """
    prefix = os.path.join(os.path.dirname(target), temporary_name(target))
    while True:
        path = f"{prefix}{next(_SERIAL)}{TEMPORARY_SUFFIX}"
        try:
            return os.open(path, _CREATE_NEW, 0o600), path
        except FileExistsError:
            continue


_FOLDER_ERRORS = frozenset(
    {errno.EEXIST, errno.ENOTDIR, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC,
     getattr(errno, "EDQUOT", errno.ENOSPC)}
)
"""Why a write fails that every other write into the output folder would fail for as well
(EEXIST: only the folders are made with an existing name; the file's own name is a fresh temporary)."""


def check_output_folder(folder: str | os.PathLike[str]) -> Path:
    """Make the output folder, with its parents as ``mkdir -p`` does, and try a write in it; return it.

    Run before a download or an export sends its first request, so that a
    folder that is a file, lies under a file, is read-only or forbidden costs
    no download; a folder that does not exist yet is made.

    Raises
    ------
    OutputFolderError
        The folder cannot be made, or a file cannot be written in it (the message says why).
    """
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputFolderError(f"{path} is a file, not a folder") from None
    except NotADirectoryError:
        blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), path)
        raise OutputFolderError(f"cannot make {path}: {blocking} is a file, not a folder") from None
    except OSError as error:
        raise OutputFolderError(f"cannot make {path}: {error.strerror}") from None
    try:
        handle, probe = _create_temporary(os.path.join(path, "probe"))
    except OSError as error:
        reason = "the disk is full" if error.errno == errno.ENOSPC else error.strerror
        raise OutputFolderError(f"cannot write in {path}: {reason}") from None
    os.close(handle)
    os.unlink(probe)
    return path


def _write_atomically(body: IO[bytes], target: str, *, make_folder: bool) -> None:
    """Copy ``body`` to a temporary file beside ``target``, then rename it into place."""
    temporary: str | None = None
    try:
        if make_folder:
            os.makedirs(os.path.dirname(target), exist_ok=True)
        handle, temporary = _create_temporary(target)
        try:
            body.seek(0)
            copy_to_descriptor(body, handle)
        finally:
            os.close(handle)
        os.replace(temporary, target)
        temporary = None
    except OSError as error:
        reason = {errno.ENOSPC: "the disk is full", errno.EEXIST: "a file stands where its folder should be",
                  errno.ENOTDIR: "a file stands where one of its folders should be"}.get(error.errno or 0, str(error))
        kind = OutputFolderError if error.errno in _FOLDER_ERRORS else StorageError
        raise kind(f"Could not write {target}: {reason}") from error
    finally:
        if temporary is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
        body.seek(0)
