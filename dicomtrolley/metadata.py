"""Instance metadata without pixel data: datasets, typed rows and DataFrames from DICOM JSON.

A researcher looks before downloading: which series, what protocol, how many
slices. WADO-RS ``/metadata`` answers that with one DICOM JSON object per
instance and no pixels. :class:`Metadata` is the result of
:meth:`~dicomtrolley.trolley.Trolley.metadata`; it streams those objects (a
20,000-instance study never sits in memory whole) and offers them three ways:

- iterate it for a pydicom Dataset per instance (bulk data such as PixelData
  is left out; its URI is kept in ``dataset.bulk_data_uris``, to fetch later);
- :meth:`Metadata.rows` for plain dicts of chosen keywords, with Python types;
- :meth:`Metadata.to_dataframe` for a pandas DataFrame of them.

Rows are built straight from the JSON, without a Dataset per instance, which
is what makes a DataFrame of a large study fast.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime, time
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset

from dicomtrolley._http import HTTPClient, iter_body
from dicomtrolley._jsonstream import iter_json_array
from dicomtrolley._tree import gc_paused
from dicomtrolley.core import Reference
from dicomtrolley.exceptions import DICOMTrolleyError

if TYPE_CHECKING:
    import pandas

logger = logging.getLogger(__name__)

DICOM_JSON = "application/dicom+json"

JSONObject = Mapping[str, Any]
"""One instance in DICOM JSON (PS3.18 F.2): tag (8 hex digits) -> ``{"vr": ..., "Value": [...]}``."""


@runtime_checkable
class MetadataSource(Protocol):
    """A downloader that can fetch instance metadata without pixel data (WADO-RS ``/metadata``)."""

    def metadata_json(self, targets: Sequence[Reference]) -> Iterator[JSONObject]:
        """Yield the DICOM JSON of every instance under ``targets``, as it arrives."""
        ...


def stream_metadata(http: HTTPClient, url: str) -> Iterator[JSONObject]:
    """GET a WADO-RS ``/metadata`` URL and yield its instances one by one, as the body arrives."""
    response = http.get(url, headers={"Accept": DICOM_JSON, "Accept-Encoding": "identity"}, stream=True)
    with response:
        for item in iter_json_array(iter_body(response), source=url):
            if not isinstance(item, dict):
                raise DICOMTrolleyError(f"{url} sent a {type(item).__name__} where an instance's JSON belongs")
            yield item


# ---------------------------------------------------------------- typed values


@lru_cache(maxsize=4096)
def _parse_date(text: str) -> date | str:
    # Cached: the instances of a study mostly share their dates, and strptime costs far more than a lookup.
    digits = text.strip()
    if len(digits) == 8 and digits.isdigit():
        try:
            return date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
        except ValueError:
            pass
    return text  # a range, or a malformed value: left as the server sent it


_TIME_FORMATS = {2: "%H", 4: "%H%M", 6: "%H%M%S"}


@lru_cache(maxsize=4096)
def _parse_time(text: str) -> time | str:
    text = text.strip().replace(":", "")
    whole, _, fraction = text.partition(".")
    fmt = _TIME_FORMATS.get(len(whole))
    if fmt is None:
        return text
    try:
        parsed = datetime.strptime(whole, fmt).time()
    except ValueError:
        return text
    if fraction.isdigit():
        parsed = parsed.replace(microsecond=int(fraction[:6].ljust(6, "0")))
    return parsed


@lru_cache(maxsize=4096)
def _parse_datetime(text: str) -> datetime | str:
    text = text.strip()
    for fmt in ("%Y%m%d%H%M%S.%f%z", "%Y%m%d%H%M%S.%f", "%Y%m%d%H%M%S%z", "%Y%m%d%H%M%S", "%Y%m%d%H%M", "%Y%m%d"):
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    return text


def _number(kind: type[int] | type[float]) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if isinstance(value, str):
            try:
                return kind(value.strip()) if value.strip() else None
            except ValueError:
                return value
        return kind(value) if value is not None else None

    return convert


def _person_name(value: Any) -> Any:
    return value.get("Alphabetic", "") if isinstance(value, dict) else value


def _sequence_item(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    return {keyword_of(tag): typed_value(element) for tag, element in value.items()}


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "DA": lambda v: _parse_date(v) if isinstance(v, str) else v,
    "TM": lambda v: _parse_time(v) if isinstance(v, str) else v,
    "DT": lambda v: _parse_datetime(v) if isinstance(v, str) else v,
    "IS": _number(int),
    "DS": _number(float),
    "PN": _person_name,
    "SQ": _sequence_item,
}


def typed_value(element: JSONObject) -> Any:
    """The value of one DICOM JSON element as Python: dates as ``date``, IS as ``int``, DS as ``float``.

    One value comes as itself, several as a tuple, none as ``None``. A person
    name gives its alphabetic form, a sequence a tuple of dicts, bulk data its
    URI, inline binary its bytes. A date or time that does not parse stays text.
    """
    values = element.get("Value")
    if values is None:
        if "BulkDataURI" in element:
            return element["BulkDataURI"]
        if "InlineBinary" in element:
            return base64.b64decode(element["InlineBinary"])
        return None
    convert = _CONVERTERS.get(element.get("vr", ""))
    if convert is not None:
        values = [convert(v) for v in values]
    if len(values) == 1 and element.get("vr") != "SQ":
        return values[0]
    return tuple(values)


@lru_cache(maxsize=4096)
def keyword_of(tag: str) -> str:
    """The DICOM keyword of an 8-hex-digit tag, or the tag itself for private and unknown ones."""
    try:
        return keyword_for_tag(int(tag, 16)) or tag
    except ValueError:
        return tag


@lru_cache(maxsize=4096)
def tag_of(keyword: str) -> str:
    """The 8-hex-digit tag (as DICOM JSON spells it) of a keyword or tag."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        if len(keyword) == 8 and all(c in "0123456789abcdefABCDEF" for c in keyword):
            return keyword.upper()
        raise DICOMTrolleyError(f"{keyword!r} is not a DICOM keyword or 8-hex-digit tag")
    return f"{tag:08X}"


def rows_from_json(objects: Iterable[JSONObject], keywords: Sequence[str] | None = None) -> Iterator[dict[str, Any]]:
    """One dict per instance: ``keywords`` -> typed value (see :func:`typed_value`).

    Without ``keywords`` every top-level attribute of each instance is a key.
    A keyword an instance lacks maps to ``None``.
    """
    if keywords is None:
        for obj in objects:
            yield {keyword_of(tag): typed_value(element) for tag, element in obj.items()}
        return
    columns = [(keyword, tag_of(keyword)) for keyword in keywords]
    for obj in objects:
        row: dict[str, Any] = {}
        for keyword, tag in columns:
            element = obj.get(tag)
            row[keyword] = typed_value(element) if element is not None else None
        yield row


def dataset_from_json(obj: JSONObject) -> Dataset:
    """A pydicom Dataset of one instance's DICOM JSON; bulk data URIs kept in ``bulk_data_uris``."""
    uris: dict[str, str] = {}

    def keep_uri(tag: str, _vr: str, uri: str) -> None:
        uris[keyword_of(tag)] = uri

    dataset = Dataset.from_json(dict(obj), bulk_data_uri_handler=keep_uri)
    for keyword in uris:
        # The element holds no value; leaving it in would make the Dataset unwritable.
        if keyword in dataset:
            del dataset[keyword]
    dataset.bulk_data_uris = uris
    return dataset


# ---------------------------------------------------------------- the result


_DATE_VRS = frozenset({"DA", "DT"})


class Metadata:
    """The metadata of some instances, fetched lazily and streamed: iterate it, or turn it into rows.

    Nothing is requested until the result is read; each read (iteration,
    :meth:`rows`, :meth:`to_dataframe`) requests the metadata anew, so a
    large study is never held in memory.

    Parameters
    ----------
    source
        Called for each read; yields the DICOM JSON of every instance.
    origin
        Where the metadata comes from, for ``repr`` and logs
        (``"WADO-RS /metadata"``, or ``"instance-level search"`` on servers without it).
    """

    def __init__(self, source: Callable[[], Iterator[JSONObject]], *, origin: str) -> None:
        self._source = source
        self.origin = origin

    def __repr__(self) -> str:
        return f"Metadata(origin={self.origin!r})"

    def json(self) -> Iterator[JSONObject]:
        """The DICOM JSON of each instance, as the server sent it."""
        return self._source()

    def __iter__(self) -> Iterator[Dataset]:
        """A pydicom Dataset per instance, without bulk data (see :func:`dataset_from_json`)."""
        return (dataset_from_json(obj) for obj in self._source())

    def rows(self, keywords: Sequence[str] | None = None) -> Iterator[dict[str, Any]]:
        """A dict per instance of ``keywords`` (all attributes by default), with Python types."""
        return rows_from_json(self._source(), keywords)

    def to_dataframe(self, keywords: Sequence[str] | None = None) -> pandas.DataFrame:
        """One row per instance, one column per keyword (``pip install dicomtrolley[pandas]``).

        Dates (DA, DT) become ``datetime64`` columns, IS integer columns
        (nullable ``Int64`` where some instance lacks the value), DS float
        columns; multi-valued attributes are tuples. The cyclic garbage
        collector is held off while the rows are built, as for search answers:
        an instance's JSON is hundreds of small objects, freed as soon as its
        row is made, and collections that find nothing to free (a full one
        right after ``import pandas``) would otherwise cost more than the rows.
        """
        try:
            import pandas
        except ImportError:
            raise ImportError("to_dataframe needs pandas: pip install dicomtrolley[pandas]") from None
        with gc_paused():
            rows = list(self.rows(keywords))
            names = list(keywords) if keywords is not None else list(dict.fromkeys(k for row in rows for k in row))
            return pandas.DataFrame({name: _column(pandas, name, [row.get(name) for row in rows]) for name in names})


def _column(pandas: Any, name: str, values: list[Any]) -> Any:
    """One DataFrame column, typed by the attribute's VR where its values allow."""
    vr = _vr_of(name)
    if vr in _DATE_VRS:
        return pandas.to_datetime(pandas.Series(values, dtype=object), errors="coerce")
    if vr == "IS" and all(v is None or type(v) is int for v in values):
        return pandas.array(values, dtype="Int64")
    if vr == "DS" and all(v is None or type(v) is float for v in values):
        return pandas.array([float("nan") if v is None else v for v in values], dtype="float64")
    if any(isinstance(v, tuple) for v in values):
        return pandas.Series(values, dtype=object)  # pandas would try to unpack the tuples
    return pandas.Series(values)


def _vr_of(keyword: str) -> str:
    try:
        return str(dictionary_VR(int(tag_of(keyword), 16)))
    except (KeyError, DICOMTrolleyError):
        return ""
