"""Which storage presentation contexts a C-GET proposes, within the 128 an association allows.

A C-GET brings instances back as C-STORE sub-operations on the association
the client opened, so the client proposes, in the SCP role, every (SOP class,
transfer syntax) it will take. The server can only send an instance as
stored when a context of its SOP class was accepted with the stored syntax;
otherwise it transcodes (changing the bytes) or refuses the instance
(0xC000). A context that lists several syntaxes lets the *server* choose
among them, so an implicit-VR object may come back explicit: each syntax that
matters gets a context of its own.

128 contexts are too few for every class times every syntax, so the proposal
is shaped: :func:`storage_contexts` takes the SOP classes the target holds
(found with a C-FIND for SOPClassesInStudy), gives each its own contexts, and
splits the budget evenly when there are many. Without that knowledge it uses
:data:`DEFAULT_STORAGE_CLASSES`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pynetdicom.presentation import PresentationContext

MAX_PRESENTATION_CONTEXTS = 128
"""An association carries at most 128 presentation contexts (PS3.8 9.3.2.2: odd IDs 1-255)."""

UNCOMPRESSED_SYNTAXES = (
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired, still stored by archives)
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
)
"""Syntaxes any SOP class may be stored in, most common first."""

COMPRESSED_SYNTAXES = (
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless, first-order prediction: the usual lossless archive format
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.50",  # JPEG baseline
    "1.2.840.10008.1.2.4.51",  # JPEG extended
    "1.2.840.10008.1.2.4.57",  # JPEG lossless
    "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.5",  # RLE lossless
)
"""Syntaxes of compressed pixel data, most common first."""

IMAGE_STORAGE = (
    "1.2.840.10008.5.1.4.1.1.2",  # CT
    "1.2.840.10008.5.1.4.1.1.4",  # MR
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture
    "1.2.840.10008.5.1.4.1.1.6.1",  # US
    "1.2.840.10008.5.1.4.1.1.3.1",  # US multi-frame
    "1.2.840.10008.5.1.4.1.1.1",  # CR
    "1.2.840.10008.5.1.4.1.1.1.1",  # DX for presentation
    "1.2.840.10008.5.1.4.1.1.1.2",  # MG for presentation
    "1.2.840.10008.5.1.4.1.1.12.1",  # XA
    "1.2.840.10008.5.1.4.1.1.20",  # NM
    "1.2.840.10008.5.1.4.1.1.128",  # PET
    "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT
    "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR
    "1.2.840.10008.5.1.4.1.1.1.1.1",  # DX for processing
    "1.2.840.10008.5.1.4.1.1.1.2.1",  # MG for processing
    "1.2.840.10008.5.1.4.1.1.12.2",  # XRF
    "1.2.840.10008.5.1.4.1.1.13.1.3",  # Breast Tomosynthesis
    "1.2.840.10008.5.1.4.1.1.130",  # Enhanced PET
    "1.2.840.10008.5.1.4.1.1.7.2",  # Multi-frame grayscale byte SC
    "1.2.840.10008.5.1.4.1.1.7.3",  # Multi-frame grayscale word SC
    "1.2.840.10008.5.1.4.1.1.7.4",  # Multi-frame true color SC
    "1.2.840.10008.5.1.4.1.1.77.1.4",  # VL Photographic
    "1.2.840.10008.5.1.4.1.1.481.1",  # RT Image
    "1.2.840.10008.5.1.4.1.1.6",  # US (retired)
    "1.2.840.10008.5.1.4.1.1.3",  # US multi-frame (retired)
    "1.2.840.10008.5.1.4.1.1.5",  # NM (retired)
    "1.2.840.10008.5.1.4.1.1.12.3",  # XA bi-plane (retired)
)
"""Storage SOP classes with pixel data: proposed with compressed syntaxes as well."""

OTHER_STORAGE = (
    "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation
    "1.2.840.10008.5.1.4.1.1.481.2",  # RT Dose
    "1.2.840.10008.5.1.4.1.1.481.3",  # RT Structure Set
    "1.2.840.10008.5.1.4.1.1.481.5",  # RT Plan
    "1.2.840.10008.5.1.4.1.1.481.8",  # RT Ion Plan
    "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR
    "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.88.59",  # Key Object Selection
    "1.2.840.10008.5.1.4.1.1.11.1",  # Grayscale Softcopy Presentation State
    "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF
    "1.2.840.10008.5.1.4.1.1.66",  # Raw Data
    "1.2.840.10008.5.1.4.1.1.9.1.1",  # 12-lead ECG waveform
    "1.2.840.10008.5.1.4.1.1.9.1.2",  # General ECG waveform
    "1.2.840.10008.5.1.4.1.1.9.1.3",  # Ambulatory ECG waveform
    "1.2.840.10008.5.1.4.1.1.9.2.1",  # Hemodynamic waveform
    "1.2.840.10008.5.1.4.1.1.9.3.1",  # Cardiac electrophysiology waveform
    "1.2.840.10008.5.1.4.1.1.9.4.1",  # Basic voice audio waveform
)
"""Storage SOP classes without compressed pixel data: proposed with the uncompressed syntaxes."""

DEFAULT_STORAGE_CLASSES = (*IMAGE_STORAGE, *OTHER_STORAGE)
"""What a C-GET proposes when it does not know which SOP classes the target holds."""


def syntaxes_for(sop_class: str) -> tuple[str, ...]:
    """The transfer syntaxes worth proposing for a SOP class, most common first.

    Classes not known to hold only uncompressed data get the compressed
    syntaxes too: an unknown class may be an image class this list lacks.
    """
    if sop_class in OTHER_STORAGE:
        return UNCOMPRESSED_SYNTAXES
    return (*UNCOMPRESSED_SYNTAXES[:2], *COMPRESSED_SYNTAXES, *UNCOMPRESSED_SYNTAXES[2:])


def plan_contexts(sop_classes: Sequence[str], budget: int = MAX_PRESENTATION_CONTEXTS - 1) -> list[list[str]]:
    """Split ``budget`` contexts among ``sop_classes``; each entry is one context's syntaxes, class first.

    Every class gets one context; the budget left is handed out a context at a
    time, round robin in the classes' order, each splitting the next syntax
    off into a context of its own. A class with ``k`` contexts thus has its
    first ``k - 1`` syntaxes alone (the server must send those as stored) and
    the rest shared. Classes beyond the budget are left out.

    Returns
    -------
    list[list[str]]
        ``[sop_class, syntax, ...]`` per context.
    """
    classes = list(dict.fromkeys(sop_classes))[:budget]
    wanted = {sop_class: syntaxes_for(sop_class) for sop_class in classes}
    counts = dict.fromkeys(classes, 1)
    left = budget - len(classes)
    while left > 0:
        growing = [c for c in classes if counts[c] < len(wanted[c])]
        if not growing:
            break
        for sop_class in growing[:left]:
            counts[sop_class] += 1
        left -= min(left, len(growing))
    plan: list[list[str]] = []
    for sop_class in classes:
        syntaxes, alone = wanted[sop_class], counts[sop_class] - 1
        plan += [[sop_class, syntax] for syntax in syntaxes[:alone]]
        plan.append([sop_class, *syntaxes[alone:]])
    return plan


def storage_contexts(sop_classes: Sequence[str] = DEFAULT_STORAGE_CLASSES) -> list[PresentationContext]:
    """The storage contexts a C-GET proposes for ``sop_classes``, leaving one for the C-GET itself.

    Examples
    --------
    >>> contexts = storage_contexts(["1.2.840.10008.5.1.4.1.1.2"])  # doctest: +SKIP
    >>> [c.transfer_syntax for c in contexts][:2]  # doctest: +SKIP
    [['1.2.840.10008.1.2.1'], ['1.2.840.10008.1.2']]
    """
    from pynetdicom import build_context

    return [build_context(sop_class, syntaxes) for sop_class, *syntaxes in plan_contexts(sop_classes)]
