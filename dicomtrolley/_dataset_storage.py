"""The storage of one download, and a 4.x storage behind the :class:`~dicomtrolley.roles.Storage` protocol.

dicomtrolley 4.x let scripts subclass ``DICOMDiskStorage`` (or ``StorageDir``)
and be handed parsed pydicom Datasets. Such a storage is adapted here, once,
where the trolley hands it to a download: :class:`DatasetStorage` parses each
part and passes it on, so the download itself only ever sees a
:class:`~dicomtrolley.roles.Storage` and never asks what it was given.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Collection
from pathlib import Path

from pydicom.dataset import Dataset

from dicomtrolley._compat import dataset_saver
from dicomtrolley.core import InstancePart, InstanceReference
from dicomtrolley.exceptions import DICOMTrolleyError, MalformedResponseError, StorageError
from dicomtrolley.roles import Attributes, SavedInstance, Storage
from dicomtrolley.storage import DICOMDiskStorage, StorageDir

logger = logging.getLogger(__name__)


class DatasetStorage(Storage):
    """A 4.x storage as a :class:`~dicomtrolley.roles.Storage`: each part is parsed and handed over as a Dataset.

    It holds nothing the download can see (every instance is fetched) and
    chooses its own paths. Its saves run one at a time, as 4.x called them.

    Parameters
    ----------
    save
        The 4.x storage's method, called as ``save(dataset=..., path=output_dir)``.
    output_dir
        The download's output folder, handed on as 4.x did (``None`` when none was given).
    name
        The 4.x storage's ``repr``, for messages.
    """

    def __init__(self, save: Callable[..., object], output_dir: str | os.PathLike[str] | None, name: str) -> None:
        self._save = save
        self.output_dir = output_dir
        self.name = name
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"DatasetStorage({self.name})"

    @property
    def fields(self) -> tuple[str, ...]:
        """None: the 4.x storage chooses its paths itself."""
        return ()

    def may_hold(self, study_uids: Collection[str]) -> bool:
        """False: what a 4.x storage holds cannot be asked, so every instance is fetched."""
        return False

    def has(self, attributes: Attributes) -> bool:
        """False (see :meth:`may_hold`)."""
        return False

    def locate(self, attributes: Attributes) -> str:
        """Unknown: a 4.x storage chooses where each dataset goes when it saves it.

        Raises
        ------
        StorageError
            Always.
        """
        raise StorageError(f"{self.name} chooses its own paths")

    def save(self, part: InstancePart) -> SavedInstance:
        """Parse the part and hand the Dataset to the 4.x storage.

        Raises
        ------
        StorageError
            The bytes are not DICOM, or the 4.x storage failed (``OSError``, ``ValueError``).
        """
        try:
            dataset = part.dataset()
        except MalformedResponseError as error:
            raise StorageError(str(error)) from error
        saved = self.save_dataset(dataset)
        return SavedInstance(saved.reference, saved.path, part.size, saved.transfer_syntax)

    def save_dataset(self, dataset: Dataset) -> SavedInstance:
        """Hand a Dataset to the 4.x storage, as ``save(dataset=..., path=output_dir)``.

        Raises
        ------
        StorageError
            The 4.x storage failed (``OSError``, ``ValueError``).
        """
        reference = InstanceReference(
            str(dataset.get("StudyInstanceUID", "")), str(dataset.get("SeriesInstanceUID", "")),
            str(dataset.get("SOPInstanceUID", "")),
        )
        try:
            with self._lock:
                self._save(dataset=dataset, path=self.output_dir)  # keywords, as 4.x called it
        except (OSError, ValueError) as error:
            raise StorageError(f"{self.name} could not save {reference.instance_uid}: {error}") from error
        transfer_syntax = dataset.file_meta.get("TransferSyntaxUID", "") if hasattr(dataset, "file_meta") else ""
        return SavedInstance(reference, Path(self.output_dir or "."), 0, str(transfer_syntax))

def storage_for(
    given: Storage | DICOMDiskStorage | None, output_dir: str | os.PathLike[str] | None, template: str | None
) -> Storage:
    """The storage of one download: the trolley's (under ``output_dir`` when given), or a folder of its own.

    A :class:`StorageDir` is copied for the download, so that its record of
    paths written ends with it and a batch of thousands of studies does not
    grow it without bound. A 4.x storage is wrapped in a :class:`DatasetStorage`.

    Raises
    ------
    DICOMTrolleyError
        No output folder at all, or a ``template`` or ``output_dir`` that this storage cannot take.
    """
    saver = dataset_saver(given, folder=StorageDir, protocol=Storage) if given is not None else None
    if saver is not None:
        if template is not None:
            raise DICOMTrolleyError("template applies to a StorageDir; this storage chooses its own paths")
        return DatasetStorage(saver, output_dir, repr(given))
    if isinstance(given, StorageDir):
        if output_dir is None:
            if template is not None:
                raise DICOMTrolleyError("template applies to output_dir; set it on the storage instead")
            return given.at(given.path)
        return given.at(output_dir) if template is None else StorageDir(output_dir, template=template)
    if isinstance(given, Storage):
        if output_dir is not None or template is not None:
            raise DICOMTrolleyError(f"output_dir and template apply to a folder; {given!r} chooses where instances go")
        return given
    if output_dir is None:
        raise DICOMTrolleyError("No output folder: pass output_dir, or Trolley(storage=...)")
    return StorageDir(output_dir, template=template)
