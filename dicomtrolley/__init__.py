"""dicomtrolley: find DICOM studies on a server and move them to disk.

Join one searcher and one downloader in a :class:`Trolley`::

    trolley = Trolley(searcher=QidoRS(session, url), downloader=WadoRS(session, url))
    trolley.download("1.2.840...", "/data/export")

Log records go to the ``dicomtrolley`` logger, which has a NullHandler; the
package never configures logging itself.
"""

import logging

from dicomtrolley._http import RetryPolicy, Timeout
from dicomtrolley._version import __version__
from dicomtrolley.auth import VitreaAuth, create_session
from dicomtrolley.core import (
    Instance,
    InstanceReference,
    Query,
    QueryLevels,
    Series,
    SeriesReference,
    Study,
    StudyReference,
)
from dicomtrolley.dicom_qr import DICOMQR
from dicomtrolley.dimse_retrieve import DICOMCGet, DICOMCMove
from dicomtrolley.dimse_store import DICOMCStore
from dicomtrolley.exceptions import DICOMTrolleyError, DownloadError, SendError
from dicomtrolley.export import ExportReport
from dicomtrolley.mint import Mint
from dicomtrolley.profiles import ServerProfile
from dicomtrolley.qido_rs import QidoRS
from dicomtrolley.rad69 import Rad69
from dicomtrolley.results import DownloadSummary
from dicomtrolley.roles import Downloader, Searcher, Sender
from dicomtrolley.sending import SendSummary
from dicomtrolley.storage import FlatStorageDir, StorageDir
from dicomtrolley.stow_rs import StowRS
from dicomtrolley.trolley import Trolley
from dicomtrolley.wado_rs import WadoRS
from dicomtrolley.wado_uri import WadoURI

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "DICOMQR",
    "DICOMCGet",
    "DICOMCMove",
    "DICOMCStore",
    "DICOMTrolleyError",
    "DownloadError",
    "DownloadSummary",
    "Downloader",
    "ExportReport",
    "FlatStorageDir",
    "Instance",
    "InstanceReference",
    "Mint",
    "QidoRS",
    "Query",
    "QueryLevels",
    "Rad69",
    "RetryPolicy",
    "Searcher",
    "SendError",
    "SendSummary",
    "Sender",
    "Series",
    "SeriesReference",
    "ServerProfile",
    "StorageDir",
    "StowRS",
    "Study",
    "StudyReference",
    "Timeout",
    "Trolley",
    "VitreaAuth",
    "WadoRS",
    "WadoURI",
    "__version__",
    "create_session",
]
