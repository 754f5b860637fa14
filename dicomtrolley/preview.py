"""Small images of series and instances, to see data before downloading it.

DICOMweb servers render an instance to JPEG or PNG themselves (WADO-RS
``/rendered`` with a ``viewport``, or ``/thumbnail``), so a preview costs one
small request instead of a download. A downloader that can ask for one is a
:class:`PreviewSource` (:meth:`WadoRS.rendered <dicomtrolley.wado_rs.WadoRS.rendered>`);
:func:`as_image` turns the bytes into a PIL Image when Pillow is installed;
:class:`PreviewGallery` shows a row of them in Jupyter.
"""

from __future__ import annotations

import base64
import html
import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from dicomtrolley.core import Instance, InstanceReference
from dicomtrolley.exceptions import DICOMTrolleyError

logger = logging.getLogger(__name__)

DEFAULT_SIZE = 128
"""Pixels along the longer edge of a preview."""

@dataclass(frozen=True)
class RenderedImage:
    """An image a server rendered: its bytes and their media type."""

    data: bytes
    content_type: str

    def _repr_html_(self) -> str:
        return _img_tag(self, "")


@runtime_checkable
class PreviewSource(Protocol):
    """A downloader whose server renders instances to images (WADO-RS)."""

    def rendered(self, instance: InstanceReference, size: int) -> RenderedImage:
        """One instance rendered to fit ``size`` x ``size`` pixels."""
        ...


def as_image(rendered: RenderedImage, size: int) -> Any:
    """A PIL Image no larger than ``size`` x ``size`` when Pillow is installed, else the image's bytes.

    A server that ignored the viewport sent a larger image: it is scaled down here.
    """
    try:
        from PIL import Image
    except ImportError:
        return rendered.data
    image = Image.open(io.BytesIO(rendered.data))
    image.load()
    if max(image.size) > size:
        image.thumbnail((size, size))
    return image


def representative_instance(instances: Sequence[Instance]) -> Instance:
    """The instance a preview shows: the middle one (by InstanceNumber) of the first series (by SeriesNumber).

    The middle slice of a CT or MR series shows the anatomy better than the first.
    """
    if not instances:
        raise DICOMTrolleyError("Nothing to preview: no instances found")

    def series_key(instance: Instance) -> tuple[int, str]:
        parent = instance.parent
        number = instance.first_value("SeriesNumber")
        if number is None and parent is not None:
            number = parent.first_value("SeriesNumber")
        return _as_int(number), parent.uid if parent is not None else ""

    first = min(series_key(i) for i in instances)
    series = sorted(
        (i for i in instances if series_key(i) == first),
        key=lambda i: (_as_int(i.first_value("InstanceNumber")), i.uid),
    )
    return series[len(series) // 2]


def _as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _img_tag(image: RenderedImage, caption: str) -> str:
    encoded = base64.b64encode(image.data).decode("ascii")
    return (
        '<figure style="display:inline-block;margin:4px;text-align:center">'
        f'<img src="data:{html.escape(image.content_type)};base64,{encoded}"/>'
        f'<figcaption style="font-size:small">{html.escape(caption)}</figcaption></figure>'
    )


class PreviewGallery:
    """A row of previews with captions; renders itself as HTML in Jupyter.

    Parameters
    ----------
    items
        ``(caption, image)`` pairs; an image that could not be rendered is
        ``None`` and shows the caption alone.
    """

    def __init__(self, items: Sequence[tuple[str, RenderedImage | None]]) -> None:
        self.items = list(items)

    def __repr__(self) -> str:
        return f"PreviewGallery({len(self.items)} previews)"

    def __len__(self) -> int:
        return len(self.items)

    def _repr_html_(self) -> str:
        parts = [
            _img_tag(image, caption) if image is not None
            else f'<figure style="display:inline-block;margin:4px">{html.escape(caption)} (no preview)</figure>'
            for caption, image in self.items
        ]
        return "<div>" + "".join(parts) + "</div>"


Previewer = Callable[[Any, int], RenderedImage]
"""Renders a study, series or instance to an image of a size: what a result list needs to show previews."""


def gallery(objects: Sequence[tuple[str, Any]], previewer: Previewer, size: int) -> PreviewGallery:
    """Render each ``(caption, object)``; an object that fails shows its caption and the reason is logged."""
    items: list[tuple[str, RenderedImage | None]] = []
    for caption, obj in objects:
        try:
            items.append((caption, previewer(obj, size)))
        except DICOMTrolleyError as error:
            logger.warning("No preview of %s: %s", obj, error)
            items.append((caption, None))
    return PreviewGallery(items)
