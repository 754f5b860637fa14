"""The audit of a pseudonymised output: proof that none of the originals' identifying values is in it.

:func:`audit` (and ``dicomtrolley audit OUTPUT``) searches every byte of every
file below the output folder, hidden and temporary files included, and every
relative path, for the values the pseudonymisation replaced or removed. Those
were recorded in the state folder as the output was written (see
:mod:`dicomtrolley._originals`), outside the output folder.

A value is searched in the forms a file or a person writes it: as it is, in
upper and lower case (the search ignores ASCII case), in UTF-8 and Latin-1; a
person's name also by its components, with spaces for ``^``, given name
first, and ``Family, Given``, a compound name also by its halves; a date also as
``2023-04-05``, ``05.04.2023``, ``05/04/2023``, ``04/05/2023``, ``2023/04/05``,
``05-Apr-2023``, ``05 Apr 2023``, ``05 April 2023`` and ``April 05, 2023``. Values and forms of digits
only match where no digit stands beside them (a date inside a longer number is
no date). A date is a patient's: another patient's shifted dates may fall on
it, so it counts only where that patient's pseudonymous PatientID stands too
(in the same file of DICOM, the same line of text, the same path). Forms of
:data:`SHORT_FORM` characters or fewer are searched as whole
words, and not inside pixel data: there a short string of bytes turns up by
chance. Forms shorter than :data:`MIN_FORM` are not searched.

Each file is also read (its header only) and handed to ``checks``, callables
that return the attributes the file must not hold, such as those PS3.15 Table
E.1-1 says must be gone.

A finding names the file, where in it (an attribute, ``bytes at offset N``,
or ``path``) and the kind of value (the attribute it came from, e.g.
``PatientName``), never the value itself: the audit's output can be shown to
anyone.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from dicomtrolley._annex_e import declared_violations
from dicomtrolley._header import pixel_data_span
from dicomtrolley._originals import VALUES_NAME, OriginalValues, default_state_folder
from dicomtrolley._paths import lies_inside
from dicomtrolley.exceptions import DeidentificationError

logger = logging.getLogger(__name__)

MIN_FORM = 3
"""Forms of a value shorter than this are not searched (``Li``, ``M``): they are everywhere."""

SHORT_FORM = 5
"""Forms up to this long are searched as whole words and outside pixel data only."""

_WINDOW = 64 << 20
"""Files are searched in windows of this many bytes (a larger file is not read into memory whole)."""

_DATE_FORMATS = ("%Y-%m-%d", "%d.%m.%Y", "%d/%m/%Y", "%m/%d/%Y", "%Y/%m/%d", "%d-%b-%Y", "%d %b %Y", "%d %B %Y",
                 "%B %d, %Y")
_DIGITS = re.compile(rb"[0-9./\-]+")
_IN = 0x61
"""What a byte of a form's alphabet becomes in the translated data (any byte but 0 would do)."""


class AuditError(DeidentificationError):
    """The audit cannot run: no output folder, or no recorded values where the state should be."""


class Violation(Protocol):
    """What a check reports: where in the file (``path``), which attribute (``keyword``), and why."""

    @property
    def path(self) -> str: ...

    @property
    def keyword(self) -> str: ...

    @property
    def reason(self) -> str: ...


Check = Callable[[Dataset], Iterable[Violation]]
"""A check of one file's header: the attributes it holds that must be gone (never their values)."""

TABLE_CHECKS: tuple[Check, ...] = (declared_violations,)
"""The checks an audit runs unless given others: the rules engine's check of PS3.15 Table E.1-1, under the
options each file declares it was pseudonymised with (:func:`dicomtrolley._annex_e.declared_violations`)."""


@dataclass(frozen=True)
class Finding:
    """Something identifying in the output: which file, where in it, and what kind of value (never the value).

    Attributes
    ----------
    file
        The file's path relative to the output folder (``/`` between folders).
    where
        The attribute holding it, ``bytes at offset N`` when no attribute can be named, or ``path``
        when the file's relative path holds it.
    kind
        The attribute the original value came from (``PatientName``), or for a check the attribute it names.
    reason
        Why a check reported it; empty for a value that was found.
    """

    file: str
    where: str
    kind: str
    reason: str = ""

    def __str__(self) -> str:
        text = f"{self.file}: {self.where}: {self.kind}"
        return f"{text} ({self.reason})" if self.reason else text


@dataclass
class AuditResult:
    """What an audit found, and how much it searched.

    Attributes
    ----------
    output
        The output folder.
    findings
        Every finding, file by file; empty when the output is clean.
    files, bytes
        Files searched and their bytes.
    values
        How many original values were searched for (each in all its forms).
    seconds
        How long the audit took.
    """

    output: Path
    findings: list[Finding] = field(default_factory=list)
    files: int = 0
    bytes: int = 0
    values: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when nothing identifying was found."""
        return not self.findings

    def __str__(self) -> str:
        verdict = "clean" if self.ok else (
            f"{len(self.findings)} findings in {len({f.file for f in self.findings})} files"
        )
        return (
            f"audit of {self.output}: {verdict} ({self.files} files, {self.bytes / 1e6:.1f} MB, "
            f"{self.values} original values searched, {self.seconds:.1f} s)"
        )


def audit(
    output: str | os.PathLike[str],
    state_dir: str | os.PathLike[str] | None = None,
    *,
    checks: Sequence[Check] = TABLE_CHECKS,
) -> AuditResult:
    """Search a pseudonymised output for the originals' identifying values, and check each file's header.

    Parameters
    ----------
    output
        The output folder of a pseudonymised download or export.
    state_dir
        The state folder where the values were recorded; default ``<output>.state`` beside the output
        folder (where a download or export without a mapping table keeps it).
    checks
        Callables that take a file's header (read up to the pixel data) and return the attributes
        that must be gone; files that are not DICOM are not checked. Default: :data:`TABLE_CHECKS`.

    Raises
    ------
    AuditError
        ``output`` is not a folder, or the state folder holds no recorded values (an output
        written before values were recorded, or the wrong folder).
    StorageError
        A link on the way to the state folder or the output folder loops, or cannot be read.
    """
    started = time.perf_counter()
    folder = Path(output)
    if not folder.is_dir():
        raise AuditError(f"{folder} is not a folder")
    state = Path(state_dir) if state_dir is not None else default_state_folder(folder, None)
    if lies_inside(state, folder):
        raise AuditError(f"The state folder {state} lies inside the output folder {folder}")
    try:
        values = OriginalValues.read(state)
    except (OSError, ValueError) as error:
        raise AuditError(f"Cannot read the recorded values in {state}: {error}") from None
    if not values:
        raise AuditError(
            f"No identifying values are recorded in {state / VALUES_NAME}: give the state folder of the "
            "pseudonymised output (--state-dir), where its download or export recorded them"
        )
    search = ValueSearch(values)
    result = AuditResult(folder, values=len(values))
    for path in _every_path(folder):
        relative = path.relative_to(folder).as_posix()
        name = relative.encode("utf-8")
        in_path = [form for at, form in search.find(name) if search.counts(at, form, name)]
        result.findings.extend(Finding(relative, "path", search.kinds[form]) for form in dict.fromkeys(in_path))
        if path.is_file() and not path.is_symlink():
            result.files += 1
            result.bytes += path.stat().st_size
            result.findings.extend(_search_file(path, relative, search))
            if checks:
                result.findings.extend(_check_file(path, relative, checks))
    result.seconds = time.perf_counter() - started
    logger.info("%s", result)
    return result


def recorded_values(state_dir: str | os.PathLike[str]) -> bool:
    """True when ``state_dir`` holds recorded identifying values: there is something to audit against."""
    return (Path(state_dir) / VALUES_NAME).is_file()


def _every_path(folder: Path) -> Iterator[Path]:
    """Every file and folder below ``folder`` (not following links), in a stable order."""
    for root, folders, files in os.walk(folder):
        folders.sort()
        base = Path(root)
        for name in sorted(folders):
            yield base / name
        for name in sorted(files):
            yield base / name


def _search_file(path: Path, relative: str, search: ValueSearch) -> list[Finding]:
    """The values found in one file's bytes, each kind once per place."""
    hits: list[tuple[int, str]] = []
    pixels: tuple[int, int] | None = None
    with path.open("rb") as file:
        offset = 0
        tail = b""
        while chunk := file.read(_WINDOW):
            block = tail + chunk
            start = offset - len(tail)
            if offset == 0:
                pixels = pixel_data_span(block)
            dicom = pixels is not None
            hits.extend(
                (start + at, search.kinds[form]) for at, form in search.find(block, _outside(pixels, start, len(block)))
                if search.counts(at, form, block, whole=dicom)
            )
            offset += len(chunk)
            tail = block[-search.longest - 1:]
    if not hits:
        return []
    places = _attributes(path, pixels, {at for at, _ in hits})
    found = dict.fromkeys((places.get(at, f"bytes at offset {at}"), kind) for at, kind in sorted(hits))
    return [Finding(relative, where, kind) for where, kind in found]


def _outside(pixels: tuple[int, int] | None, start: int, length: int) -> list[tuple[int, int]]:
    """The ranges of a block (relative to it) that lie outside the pixel data: where short forms are searched."""
    if pixels is None or pixels[0] >= pixels[1]:
        return [(0, length)]
    low, high = pixels[0] - start, pixels[1] - start
    return [(a, b) for a, b in ((0, min(low, length)), (max(high, 0), length)) if a < b]


def _attributes(path: Path, pixels: tuple[int, int] | None, offsets: set[int]) -> dict[int, str]:
    """The top-level attribute each offset of a DICOM file falls in, where its header says (read only for a hit)."""
    if pixels is None:
        return {}
    spans = [(pixels[0], pixels[1], "PixelData")]
    try:
        dataset: Dataset = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except (InvalidDicomError, OSError, ValueError, EOFError):
        dataset = Dataset()
    for tag in dataset.keys():  # noqa: SIM118 - iterating the dataset would decode every value
        raw = dataset.get_item(tag)
        tell, length = getattr(raw, "value_tell", None), getattr(raw, "length", 0xFFFFFFFF)
        if tell is not None and length != 0xFFFFFFFF:
            spans.append((tell, tell + length, pydicom.datadict.keyword_for_tag(tag) or f"({tag:08X})"))
    return {at: keyword for at in offsets for low, high, keyword in spans if low <= at < high}


def _check_file(path: Path, relative: str, checks: Sequence[Check]) -> list[Finding]:
    """What the checks report of one file's header; nothing for a file that is not DICOM."""
    try:
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError):
        return []
    return [Finding(relative, v.path, v.keyword, v.reason) for check in checks for v in check(dataset)]


# ---------------------------------------------------------------- the search


class ValueSearch:
    """Every form of every value, compiled into two regular expressions over lower-case bytes.

    One pattern for the long forms, searched in every byte, and one for the
    short forms, searched as whole words outside the pixel data. Each is a
    trie of its forms (``(?:ab(?:c|d))``), so the regular expression engine
    skips the bytes no form starts with, and steps through the forms that
    share a start together instead of trying each in turn: the cost per byte
    hardly grows with the number of values.

    Parameters
    ----------
    values
        Each value, with the kind (the attribute it came from) to report it as, and the
        pseudonymous PatientIDs it counts beside (none: everywhere).
    """

    def __init__(self, values: dict[str, tuple[str, frozenset[str]]]) -> None:
        kinds: dict[bytes, str] = {}
        self.scopes: dict[bytes, list[bytes]] = {}
        for value, (kind, scopes) in values.items():
            for form in forms(value):
                kinds.setdefault(form, kind)
                if scopes:
                    self.scopes.setdefault(form, []).extend(scope.encode("utf-8") for scope in scopes)
        self.kinds = kinds
        self.longest = max((len(form) for form in kinds), default=0)
        long = [form for form in kinds if len(form) > SHORT_FORM]
        # One trie, no lookbehind in front: the engine then skips every byte that starts no form
        # (a pattern that opens with a lookbehind is tried at every byte, thirty times slower).
        # Forms of digits are checked for a digit beside them after they matched.
        self._long = re.compile(_trie(long)) if long else None
        self._bounded = frozenset(form for form in long if _DIGITS.fullmatch(form))
        # Every byte of a long form is one of few (its alphabet), so a form lies within a run of
        # at least as many such bytes as the shortest form has: found by bytes.find on the data
        # translated to "in the alphabet or not", much faster than the engine's byte by byte scan.
        # Pixel data holds hardly any such run; only the runs are lower-cased and searched.
        alphabet = {byte for form in long for byte in form}
        self._table = bytes(_IN if byte in alphabet or bytes([byte]).lower()[0] in alphabet else 0
                            for byte in range(256))
        self._run = bytes([_IN]) * min((len(form) for form in long), default=1)
        short = [form for form in kinds if len(form) <= SHORT_FORM]
        self._short = re.compile(rb"(?<![a-z0-9])" + _trie(short) + rb"(?![a-z0-9])") if short else None

    def find(self, data: bytes, outside_pixels: list[tuple[int, int]] | None = None) -> Iterator[tuple[int, bytes]]:
        """Where a form is in ``data``, and which (lower case); short forms only within ``outside_pixels``."""
        if self._long is not None:
            yield from self._find_long(data, self._long)
        if self._short is not None:
            for low, high in outside_pixels if outside_pixels is not None else [(0, len(data))]:
                for match in self._short.finditer(data[low:high].lower()):
                    yield low + match.start(), match.group()

    def _find_long(self, data: bytes, pattern: re.Pattern[bytes]) -> Iterator[tuple[int, bytes]]:
        runs = data.translate(self._table)
        run = runs.find(self._run)
        while run != -1:
            stop = runs.find(b"\0", run)
            stop = len(data) if stop == -1 else stop
            text = data[run:stop].lower()  # bytes beside the run are not in the alphabet: no digit either
            position = 0
            while match := pattern.search(text, position):
                start, end = match.span()
                form = match.group()
                if form in self._bounded and (_digit_at(text, start - 1) or _digit_at(text, end)):
                    position = start + 1  # a longer number: look on from the next byte
                    continue
                yield run + start, form
                position = end
            run = runs.find(self._run, stop)

    def counts(self, at: int, form: bytes, data: bytes, *, whole: bool = False) -> bool:
        """Whether a form found at ``at`` counts: unless it is a patient's, where its patient's ID stands too.

        ``whole``: anywhere in ``data`` (a DICOM file); else in the same line of ``data``.
        """
        scopes = self.scopes.get(form)
        if not scopes:
            return True
        if not whole:
            data = data[data.rfind(b"\n", 0, at) + 1:data.find(b"\n", at) % (len(data) + 1)]
        return any(scope in data for scope in scopes)


def _digit_at(data: bytes, index: int) -> bool:
    return 0 <= index < len(data) and 0x30 <= data[index] <= 0x39


def forms(value: str) -> set[bytes]:
    """The forms ``value`` can be written in, lower-cased (ASCII) and encoded; see the module's docstring."""
    texts = set()
    for item in value.split("\\"):
        item = item.strip()
        if not item:
            continue
        texts.add(item)
        if "^" in item or "=" in item:
            texts.update(_name_forms(item))
        texts.update(_date_forms(item))
    encoded: set[bytes] = set()
    for text in texts:
        for cased in (text, text.upper(), text.lower()):
            for encoding in ("utf-8", "latin-1"):
                try:
                    encoded.add(cased.encode(encoding).lower())
                except UnicodeEncodeError:
                    continue
    return {form for form in encoded if len(form) >= MIN_FORM}


def _name_forms(name: str) -> set[str]:
    """A person's name (``Family^Given^Middle^Prefix^Suffix``, groups split by ``=``) as people write it."""
    found: set[str] = set()
    for group in name.split("="):
        parts = [part.strip() for part in group.split("^") if part.strip()]
        if not parts:
            continue
        found.update(parts)
        found.update(half for part in parts if "-" in part for half in part.split("-"))  # "Pemberton Hale"
        found.add(" ".join(parts))
        if len(parts) >= 2:
            family, given = parts[0], parts[1]
            found.update({f"{given} {family}", f"{family}, {given}", f"{family},{given}", f"{given[0]}. {family}"})
    return found


def _date_forms(text: str) -> list[str]:
    """A date (or a date-time's date) in the other formats people write it; none when it is no date."""
    if len(text) < 8 or not text[:8].isdigit() or (len(text) > 8 and not text[8:].replace(".", "").isdigit()):
        return []
    try:
        day = datetime.strptime(text[:8], "%Y%m%d")  # a calendar date, no zone
    except ValueError:
        return []
    return [text[:8], *(day.strftime(f) for f in _DATE_FORMATS)]


def _trie(forms: Iterable[bytes]) -> bytes:
    """A regular expression matching any of ``forms``, longest first, built as a trie of their bytes."""
    root: dict[int | None, dict] = {}  # type: ignore[type-arg]
    for form in forms:
        node = root
        for byte in form:
            node = node.setdefault(byte, {})
        node[None] = {}
    return _branch(root)


def _branch(node: dict) -> bytes:  # type: ignore[type-arg]
    ends = None in node
    children = [re.escape(bytes([byte])) + _branch(child) for byte, child in sorted(
        (k, v) for k, v in node.items() if k is not None
    )]
    if not children:
        return b""
    body = children[0] if len(children) == 1 and not ends else b"(?:" + b"|".join(children) + b")"
    return b"(?:" + body + b")?" if ends else body
