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
