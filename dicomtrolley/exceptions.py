"""The exceptions of dicomtrolley.

Every error the package raises derives from :class:`DICOMTrolleyError`, so a
batch script can catch one class and still tell failures apart by subclass.
Messages name what failed (URL, HTTP status, the server's own words, DIMSE
status) and never carry credentials.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # For the annotations only: both are made far above this module.
    from dicomtrolley.core import Quarantined
    from dicomtrolley.results import DownloadSummary
    from dicomtrolley.sending import SendSummary


class DICOMTrolleyError(Exception):
    """Base class of every error raised by dicomtrolley."""


class DICOMTrolleyAuthError(DICOMTrolleyError):
    """Logging in failed, or the server refused a request right after a login."""


class UnSupportedParameterError(DICOMTrolleyError):
    """A query sets a parameter that this searcher cannot send to its server.

    Raised instead of silently dropping the parameter, which would widen the
    search without the user knowing.
    """


class NoQueryResultsError(DICOMTrolleyError):
    """A search that had to find something found nothing."""


class SearchCutError(DICOMTrolleyError):
    """A server's search named fewer instances of a series than the series holds: it cut its answer at a cap.

    Raised (or listed as a download's failure) when the instances left
    unnamed cannot be fetched another way: a downloader that fetches
    instance by instance (WADO-URI) needs every instance's UID.
    """


class NoReferencesFoundError(DICOMTrolleyError):
    """An object holds no references at the level asked for.

    A study found by a study-level search knows none of its series, so it
    cannot be split into series or instances without another search.
    """


class NonSeriesParameterError(DICOMTrolleyError):
    """Objects could not be split into series or instances without another search."""


class NonInstanceParameterError(DICOMTrolleyError):
    """Objects could not be split into instances without another search.

    Raised by a downloader that fetches single instances (WADO-URI) when given
    a study or series: a :class:`~dicomtrolley.trolley.Trolley` with a
    searcher resolves them first.
    """


class AmbiguousQueryError(DICOMTrolleyError):
    """A search that had to find exactly one study found several."""


class ServerError(DICOMTrolleyError):
    """A server answered with an error status.

    Parameters
    ----------
    url
        The URL that was requested (without credentials).
    status
        The HTTP status code.
    reason
        The HTTP reason phrase.
    server_message
        The start of the response body, which usually says what went wrong.
    """

    def __init__(self, url: str, status: int, reason: str = "", server_message: str = "") -> None:
        self.url = url
        self.status = status
        self.reason = reason
        self.server_message = server_message
        text = f"{status} {reason}".strip() + f" from {url}"
        if server_message:
            text += f": {server_message}"
        super().__init__(text)


class ConnectionFailedError(DICOMTrolleyError):
    """A server could not be reached, or the connection broke or timed out."""


class MalformedResponseError(DICOMTrolleyError):
    """A server's answer could not be understood (not DICOM JSON, missing UIDs, ...)."""


class ResponseTooLargeError(MalformedResponseError):
    """A server's answer is larger than the client accepts (a runaway search, or a decompression bomb)."""


class MultipartError(MalformedResponseError):
    """A multipart/related body is malformed: no boundary, truncated, unterminated."""


class TruncatedBodyError(MultipartError):
    """A multipart body ended early: cut mid-part, or before its closing delimiter.

    Usually the connection was cut (a server that ends its answers at close
    cannot say otherwise), so asking again may well succeed.
    """


class HeaderError(MalformedResponseError):
    """The bytes of an instance are not a readable DICOM file: its header cannot be read."""


class StorageError(DICOMTrolleyError):
    """A file could not be written, or its path would be unsafe."""


class OutputFolderError(StorageError):
    """The output folder cannot be made or written in: every later write would fail as well.

    Raised by :func:`~dicomtrolley.storage.check_output_folder` before a
    download or an export starts, and by a write that finds its folder is a file,
    forbidden, read-only or full; a download then stops at once rather than
    failing instance after instance.
    """


class TemplateError(StorageError, ValueError):
    """A path template is malformed or names something that is not a DICOM keyword.

    Raised when the template is read, before anything is downloaded; the
    message suggests the closest keyword for a typo (``PatientId``: ``PatientID``).
    """


class StorageCollisionError(StorageError):
    """Two different instances map to one file path under a storage template."""


class DownloadError(DICOMTrolleyError):
    """A download finished with failures; ``summary`` says what is missing.

    Parameters
    ----------
    message
        What went wrong, in one line.
    summary
        The :class:`~dicomtrolley.results.DownloadSummary` of the run, when there is one.
    """

    def __init__(self, message: str, summary: DownloadSummary | None = None) -> None:
        super().__init__(message)
        self.summary = summary


class SendError(DICOMTrolleyError):
    """A send (STOW-RS, C-STORE) finished with failures; ``summary`` says which instances and why.

    Parameters
    ----------
    message
        What went wrong, in one line.
    summary
        The :class:`~dicomtrolley.sending.SendSummary` of the run.
    """

    def __init__(self, message: str, summary: SendSummary | None = None) -> None:
        super().__init__(message)
        self.summary = summary


class DownloadCancelledError(DICOMTrolleyError):
    """A download stopped because its consumer stopped reading (an abandoned ``datasets()`` loop)."""


class DIMSEError(DICOMTrolleyError):
    """A DIMSE operation (C-FIND, C-GET, C-MOVE) failed or the association broke.

    Parameters
    ----------
    message
        What failed.
    status
        The DIMSE status code, when the peer sent one.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class DIMSEConnectionError(DIMSEError, ConnectionFailedError):
    """A DIMSE server could not be reached: nothing listens at its address, or it did not answer in time."""


class Rad69ServerError(ServerError):
    """A RAD-69 server answered a retrieve with ``Failure`` or a SOAP Fault.

    Parameters
    ----------
    url
        The RAD-69 endpoint (without credentials).
    status
        The HTTP status of the answer (200 for a SOAP ``Failure`` answer).
    codes
        The error codes the server gave (``XDSMissingDocument``, a SOAP fault
        code such as ``soap:Receiver``), in its order.
    server_message
        What the server said about them (``codeContext``, the fault's reason).
    """

    def __init__(self, url: str, status: int, codes: tuple[str, ...], server_message: str = "") -> None:
        self.codes = codes
        super().__init__(url, status, "", f"{', '.join(codes) or 'no error code'}: {server_message}".rstrip(": "))


class XDSMissingDocumentError(Rad69ServerError):
    """A RAD-69 server reported a requested instance missing (``XDSMissingDocument``).

    A ``PartialSuccess`` answer reports one of these per missing instance,
    while the instances that did arrive are kept.
    """


class WorklistError(DICOMTrolleyError):
    """A worklist for an export has unknown columns or rows that cannot be read.

    Raised before anything is downloaded. ``problems`` lists each bad line as
    ``(line number, what is wrong)``.
    """

    def __init__(self, message: str, problems: list[tuple[int, str]] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class ExportLockedError(DICOMTrolleyError):
    """Another export is running into the same output folder."""


class DeidentificationError(DICOMTrolleyError):
    """Pseudonymisation cannot go ahead: a bad configuration, or a mapping table in the wrong place."""


class DeidentificationKeyError(DeidentificationError):
    """No pseudonymisation key was found, or it is too short to be safe.

    Raised before anything is downloaded. The message names where the key was
    looked for, never the key itself.
    """


class InstanceQuarantinedError(DeidentificationError):
    """An instance was held back from the output folder (burned-in annotation, a quarantined SOP class).

    Not a failure of the download: the trolley lists ``quarantined`` in
    :attr:`~dicomtrolley.results.DownloadSummary.quarantined` and goes on.

    Parameters
    ----------
    quarantined
        Which instance, and why.
    """

    def __init__(self, quarantined: Quarantined) -> None:
        super().__init__(str(quarantined))
        self.quarantined = quarantined


class SharedFolderError(DICOMTrolleyError):
    """An export's output folder is not the same folder for every worker of a cluster.

    Raised before anything is downloaded: the workers write the studies and
    the process that started the export keeps the state and the report, so all
    of them must see the same files.
    """
