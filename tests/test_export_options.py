"""ExportOptions: the one declaration of how an export runs, and the keywords that map onto it."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicomtrolley.export import ExportOptions, export
from dicomtrolley.export.politeness import TimeWindow


def test_text_from_the_command_line_is_read_into_typed_options() -> None:
    options = ExportOptions(max_rate="50MB/s", window="19:00-07:00", state_dir="state")  # type: ignore[arg-type]

    assert options.max_rate == 50e6
    assert options.window == TimeWindow.parse("19:00-07:00")
    assert options.state_dir == Path("state")


def test_keywords_change_the_fields_of_the_options_they_are_given_with() -> None:
    options = ExportOptions(studies=2, template="{SOPInstanceUID}").with_changes(refresh=True)

    assert (options.studies, options.template, options.refresh) == (2, "{SOPInstanceUID}", True)


def test_a_keyword_that_is_no_option_is_refused_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"Unknown export option\(s\) studys; the options are studies, "):
        export(lambda: None, ["1.2.3"], tmp_path, studys=2)  # type: ignore[arg-type, return-value]

    assert not any(tmp_path.iterdir())


def test_studies_in_flight_default_to_four_unless_set() -> None:
    assert ExportOptions().in_flight == 4
    assert ExportOptions(studies=9).in_flight == 9


def test_fewer_than_one_study_in_flight_is_refused() -> None:
    with pytest.raises(ValueError, match="studies must be at least 1"):
        ExportOptions(studies=0)
