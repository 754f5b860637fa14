"""dicomtrolley: find DICOM studies on a server and move them to disk.

Join one searcher and one downloader in a :class:`Trolley`::

    trolley = Trolley(searcher=QidoRS(session, url), downloader=WadoRS(session, url))
    trolley.download("1.2.840...", "/data/export")

Log records go to the ``dicomtrolley`` logger, which has a NullHandler; the
package never configures logging itself.
"""

import logging

__version__ = "5.0.0.dev0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

# The public names, importable from the package itself (after __version__,
# which dicomtrolley.http reads while these imports run).
from dicomtrolley.auth import VitreaAuth, create_session  # noqa: E402
from dicomtrolley.core import (  # noqa: E402
    Instance,
    InstanceReference,
    Query,
    QueryLevels,
    Series,
    SeriesReference,
    Study,
    StudyReference,
)
from dicomtrolley.dicom_qr import DICOMQR  # noqa: E402
from dicomtrolley.dimse_retrieve import DICOMCGet, DICOMCMove  # noqa: E402
from dicomtrolley.exceptions import DICOMTrolleyError  # noqa: E402
from dicomtrolley.qido_rs import QidoRS  # noqa: E402
from dicomtrolley.storage import FlatStorageDir, StorageDir  # noqa: E402
from dicomtrolley.trolley import DownloadSummary, Trolley  # noqa: E402
from dicomtrolley.wado_rs import WadoRS  # noqa: E402
from dicomtrolley.wado_uri import WadoURI  # noqa: E402

__all__ = [
    "DICOMQR",
    "DICOMCGet",
    "DICOMCMove",
    "DICOMTrolleyError",
    "DownloadSummary",
    "FlatStorageDir",
    "Instance",
    "InstanceReference",
    "QidoRS",
    "Query",
    "QueryLevels",
    "Series",
    "SeriesReference",
    "StorageDir",
    "Study",
    "StudyReference",
    "Trolley",
    "VitreaAuth",
    "WadoRS",
    "WadoURI",
    "__version__",
    "create_session",
]
