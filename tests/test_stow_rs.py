"""STOW-RS against the fault server: how each kind of answer is read, per instance."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from dicomtrolley.auth import create_session
from dicomtrolley.cli import main
from dicomtrolley.exceptions import SendError
from dicomtrolley.stow_rs import MultipartBody, StowRS
from tests.support import stow_answers
from tests.support.command_line import usage_error
from tests.support.fault_server import Fault, FaultServer, Route, ServedInstance, make_instances


@pytest.fixture
def instances() -> list[ServedInstance]:
    return make_instances(series_sizes=(3, 3), name="stow")


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer([]) as running:
        yield running


@pytest.fixture
def folder(tmp_path: Path, instances: list[ServedInstance]) -> Path:
    for number, instance in enumerate(instances):
        (tmp_path / f"IM{number}.dcm").write_bytes(instance.data)
    return tmp_path


def stow(server: FaultServer, **options: object) -> StowRS:
    return StowRS(requests.Session(), server.dicomweb_url, **options)  # type: ignore[arg-type]


def test_every_instance_arrives_byte_equal_in_bodies_that_declare_their_length(
    server: FaultServer, folder: Path, instances: list[ServedInstance]
) -> None:
    summary = stow(server).send(folder)
    assert summary.sent == 6
    assert summary.ok
    assert sorted(server.stored) == sorted(i.data for i in instances)
    posts = [r for r in server.seen if r.route is Route.STOW_RS]
    assert all("content-length" in r.headers and "transfer-encoding" not in r.headers for r in posts)
    assert all(r.headers["content-type"].startswith('multipart/related; type="application/dicom"') for r in posts)


def test_a_body_is_built_from_disk_each_time_it_is_iterated_and_its_length_is_exact(folder: Path) -> None:
    from dicomtrolley.sending import collect

    body = MultipartBody(collect(folder).items)
    first, second = b"".join(body), b"".join(body)
    assert first == second
    assert len(first) == len(body)
    assert len(stow_answers.split_body(body.content_type, first)) == 6


def test_bodies_hold_at_most_the_batch_limits(server: FaultServer, folder: Path) -> None:
    stow(server, batch_instances=2).send(folder)
    assert server.count(Route.STOW_RS) == 3


def test_a_202_answer_names_each_refused_instance_with_its_reason_and_the_rest_count_as_sent(
    server: FaultServer, folder: Path, instances: list[ServedInstance]
) -> None:
    server.add_fault(Fault.REFUSE, route=Route.STOW_RS, after_parts=1, status=0xA700, times=1)
    summary = stow(server, workers=1).send(folder, on_error="collect")
    assert summary.sent == 5
    assert summary.failed == 1
    failure = summary.failures[0]
    assert failure.sop_instance_uid == instances[0].sop_uid
    assert failure.name.endswith("IM0.dcm")
    assert "0xA700 (out of resources)" in failure.reason


def test_a_warning_reason_keeps_the_instance_stored_and_names_the_warning(server: FaultServer, folder: Path) -> None:
    server.add_fault(Fault.REFUSE, route=Route.STOW_RS, after_parts=1, status=0xB000, times=1)
    summary = stow(server, workers=1).send(folder)
    assert summary.sent == 6
    assert summary.warnings == [(str(folder / "IM0.dcm"), "0xB000 (coercion of data elements)")]


def test_failures_raise_a_send_error_carrying_the_summary_by_default(server: FaultServer, folder: Path) -> None:
    server.add_fault(Fault.REFUSE, route=Route.STOW_RS, after_parts=1, status=0xC000, times=1)
    with pytest.raises(SendError, match="cannot understand") as caught:
        stow(server, workers=1).send(folder)
    assert caught.value.summary is not None
    assert caught.value.summary.sent == 5


def test_a_409_answer_fails_every_instance_of_the_body(server: FaultServer, folder: Path) -> None:
    server.add_fault(Fault.REFUSE, route=Route.STOW_RS, status=409)
    summary = stow(server, batch_instances=3).send(folder, on_error="collect")
    assert summary.sent == 0
    assert summary.failed == 6
    assert all(f.reason.startswith("409: refused, 0x0111 (duplicate SOP instance)") for f in summary.failures)


def test_an_error_status_without_dicom_json_fails_the_body_with_the_server_message(
    server: FaultServer, folder: Path
) -> None:
    server.add_fault(Fault.STATUS, route=Route.STOW_RS, status=400, times=1)
    summary = stow(server, workers=1, batch_instances=3).send(folder, on_error="collect")
    assert summary.sent == 3
    assert summary.failed == 3
    assert summary.failures[0].reason == "400 Bad Request: fault server: status 400"


def test_a_413_answer_splits_the_body_until_the_server_takes_it(server: FaultServer, folder: Path) -> None:
    server.add_fault(Fault.TOO_LARGE, route=Route.STOW_RS, after_parts=1)
    summary = stow(server, batch_instances=4).send(folder)
    assert summary.sent == 6
    assert len(server.stored) == 6
    # 4 -> 2+2 -> 1+1+1+1, and 2 -> 1+1: 7 + 3 requests
    assert server.count(Route.STOW_RS) == 10


def test_a_503_is_tried_again(server: FaultServer, folder: Path) -> None:
    server.add_fault(Fault.STATUS, route=Route.STOW_RS, status=503, retry_after="0", times=1)
    summary = stow(server, workers=1, batch_instances=6).send(folder)
    assert summary.sent == 6
    assert server.count(Route.STOW_RS) == 2


def test_the_session_login_applies_to_stores_unchanged(instances: list[ServedInstance], folder: Path) -> None:
    with FaultServer([], require_login=True) as server:
        session = create_session(server.login_url, server.user, server.password)
        summary = StowRS(session, server.dicomweb_url).send(folder)
    assert summary.sent == 6


def test_upload_lists_each_failed_instance_and_exits_one(
    server: FaultServer, folder: Path, instances: list[ServedInstance], capsys: pytest.CaptureFixture[str]
) -> None:
    server.add_fault(Fault.REFUSE, route=Route.STOW_RS, after_parts=1, status=0xA900, times=1)
    status = main(["upload", server.dicomweb_url, str(folder), "--workers", "1", "--no-progress"])
    out, err = capsys.readouterr()
    assert status == 1
    assert out.startswith("5 instances sent")
    assert f"failed: {folder / 'IM0.dcm'} ({instances[0].sop_uid}): 202: refused, 0xA900" in err


def test_upload_to_an_unreachable_server_exits_three(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FaultServer([]) as gone:
        url = gone.dicomweb_url
    status = main(["upload", url, str(folder), "--no-progress"])
    assert status == 3
    assert "6 instances not sent" in capsys.readouterr().err


def test_progress_counts_instances_and_bytes_as_the_answers_come(server: FaultServer, folder: Path) -> None:
    from dicomtrolley.progress import Progress

    seen: list[Progress] = []
    summary = stow(server, workers=1, batch_instances=2).send(folder, progress=seen.append)
    assert [p.instances for p in seen] == [1, 2, 3, 4, 5, 6]
    assert seen[-1].total == 6
    assert seen[-1].bytes_written == summary.bytes_sent


def test_upload_without_a_path_is_a_usage_mistake_and_exits_two(capsys: pytest.CaptureFixture[str]) -> None:
    assert "give the files or folders to send" in usage_error(["upload", "http://127.0.0.1:9/dicom-web"], capsys)


def test_upload_with_c_store_and_no_address_names_the_options_it_lacks(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = usage_error(["upload", "--sender", "c-store", "http://127.0.0.1:9/dicom-web", str(folder)], capsys)
    assert "--sender c-store needs --host and --port" in err


def test_upload_of_a_path_that_does_not_exist_is_a_usage_error_before_any_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "not-there"
    err = usage_error(["upload", "http://127.0.0.1:9/dicom-web", str(missing), "--no-progress"], capsys)
    assert f"no such file or folder: {missing}" in err


def test_upload_of_folders_without_a_file_is_a_usage_error_before_any_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty" / "nested").mkdir(parents=True)
    (tmp_path / "also-empty").mkdir()
    folders = [str(tmp_path / "empty"), str(tmp_path / "also-empty")]
    err = usage_error(["upload", "http://127.0.0.1:9/dicom-web", *folders, "--no-progress"], capsys)
    assert f"nothing to send: no file in {folders[0]}, {folders[1]}" in err


def test_upload_of_files_none_of_which_is_dicom_sends_nothing_and_exits_one(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "README.txt").write_text("not an image", encoding="utf-8")
    status = main(["upload", server.dicomweb_url, str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err
    assert status == 1
    assert "nothing sent: no DICOM file among those given (1 skipped)" in err
    assert server.count(Route.STOW_RS) == 0
