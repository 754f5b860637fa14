"""Signatures an IDE can read: no public callable hides its parameters behind ``**kwargs``."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

import dicomtrolley
from dicomtrolley._http_downloader import HTTPDownloader
from dicomtrolley._http_searcher import HTTPSearcher
from dicomtrolley.core import Study
from dicomtrolley.export import export
from dicomtrolley.export.cluster import export_on_dask
from dicomtrolley.mint import MintStudy
from dicomtrolley.qido_rs import QidoRS
from dicomtrolley.rad69 import Rad69
from dicomtrolley.trolley import Trolley
from dicomtrolley.wado_uri import WadoURI


def public_callables() -> Iterator[tuple[str, Callable[..., Any]]]:
    """Every public function, and every public method (``__init__`` too) of every public class, by name."""
    for module_info in pkgutil.walk_packages(dicomtrolley.__path__, "dicomtrolley."):
        if any(part.startswith("_") for part in module_info.name.split(".")[1:]):
            continue
        module = importlib.import_module(module_info.name)
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            if inspect.isfunction(obj):
                yield f"{module.__name__}.{name}", obj
            elif inspect.isclass(obj):
                for attribute, member in vars(obj).items():
                    function = member.__func__ if isinstance(member, (classmethod, staticmethod)) else member
                    if (
                        inspect.isfunction(function)
                        and function.__module__ == module.__name__  # not typing's __init__ of a Protocol
                        and (attribute == "__init__" or not attribute.startswith("_"))
                    ):
                        yield f"{module.__name__}.{name}.{attribute}", function


def test_no_public_callable_takes_keyword_arguments_it_does_not_name() -> None:
    hiding = [
        name for name, function in public_callables()
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(function).parameters.values())
    ]

    assert hiding == []


def keywords(function: Callable[..., Any]) -> set[str]:
    return {name for name, p in inspect.signature(function).parameters.items() if p.kind is p.KEYWORD_ONLY}


def test_trolley_export_names_every_option_of_export() -> None:
    assert keywords(Trolley.export) == keywords(export)


def test_export_on_dask_takes_the_options_as_one_object_instead_of_repeating_them() -> None:
    assert keywords(export_on_dask) == {"options", "announce"}


@pytest.mark.parametrize(
    ("subclass", "base", "not_taken"),
    [(Rad69, HTTPDownloader, {"transfer_syntax"}), (MintStudy, Study, set())],
    ids=["Rad69", "MintStudy"],
)
def test_a_constructor_that_restates_its_bases_parameters_keeps_their_kinds_and_defaults(
    subclass: type, base: type, not_taken: set[str]
) -> None:
    # Named again rather than passed on as **kwargs, so that an IDE shows them: they must not drift apart.
    restated = inspect.signature(subclass.__init__).parameters
    declared = inspect.signature(base.__init__).parameters

    assert set(declared) - set(restated) == not_taken
    assert {name: (restated[name].kind, restated[name].default) for name in declared if name in restated} == {
        name: (p.kind, p.default) for name, p in declared.items() if name in restated
    }


def test_qido_rs_takes_the_http_searchers_parameters_then_its_own_without_restating_them() -> None:
    # HTTPSearcher's constructor is its dataclass fields; QidoRS adds its settings as keyword-only fields.
    shared, own = inspect.signature(HTTPSearcher).parameters, inspect.signature(QidoRS).parameters

    assert [(name, p.kind, p.default) for name, p in own.items()][: len(shared)] == [
        (name, p.kind, p.default) for name, p in shared.items()
    ]
    assert list(own) == ["session", "url", "timeout", "retry", "page_size", "max_answer_bytes"]
    assert {name: own[name].kind for name in ("page_size", "max_answer_bytes")} == {
        "page_size": inspect.Parameter.KEYWORD_ONLY, "max_answer_bytes": inspect.Parameter.KEYWORD_ONLY
    }


def test_wado_uri_names_the_http_settings_and_keeps_4x_keywords() -> None:
    assert {"transfer_syntax", "workers", "timeout", "retry", "spill_threshold", "use_async", "max_workers"} <= (
        keywords(WadoURI.__init__)
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        downloader = WadoURI(requests.Session(), "http://pacs/wado", use_async=True, max_workers=3)
    assert downloader.workers == 3
    assert [w.category for w in caught] == [DeprecationWarning]
