"""ExportOptions: the one declaration of how an export runs, and the keywords that map onto it."""

from __future__ import annotations

import dataclasses
import inspect
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dicomtrolley.export import ExportOptions, export
from dicomtrolley.export.cluster import export_on_dask
from dicomtrolley.profiles import ServerProfile
from dicomtrolley.trolley import Trolley


@pytest.mark.parametrize("function", [export, Trolley.export], ids=lambda f: f.__qualname__)
def test_every_export_function_takes_the_options_with_their_declared_defaults(function: object) -> None:
    parameters = inspect.signature(function).parameters  # type: ignore[arg-type]
    named = {f.name: f.default for f in dataclasses.fields(ExportOptions) if f.name in parameters}

    assert {name: parameters[name].default for name in named} == named
    assert set(named) >= {f.name for f in dataclasses.fields(ExportOptions)} - {"executor"}


def test_text_from_the_command_line_is_read_into_typed_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[ExportOptions] = []

    def run(source: object, worklist: object, output_dir: object, options: ExportOptions) -> None:
        seen.append(options)

    monkeypatch.setattr("dicomtrolley.export.run_export", run)
    export(lambda: None, [], tmp_path, max_rate="50MB/s", window="19:00-07:00", state_dir="state")  # type: ignore[arg-type]

    (options,) = seen
    assert options.max_rate == 50e6
    assert str(options.window) == "19:00-07:00"
    assert options.state_dir == Path("state")


def test_studies_in_flight_default_to_four_unless_set() -> None:
    assert ExportOptions().in_flight == 4
    assert ExportOptions(studies=9).in_flight == 9


def test_export_on_dask_refuses_an_executor_before_connecting_as_it_brings_the_clusters(tmp_path: Path) -> None:
    options = ExportOptions(executor=ThreadPoolExecutor(1))

    with pytest.raises(ValueError, match="cluster's executor"):
        export_on_dask(ServerProfile(url="http://pacs/dicom-web"), [], tmp_path, "tcp://127.0.0.1:9", options=options)


def test_fewer_than_one_study_in_flight_is_refused() -> None:
    with pytest.raises(ValueError, match="studies must be at least 1"):
        ExportOptions(studies=0)
