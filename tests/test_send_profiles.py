"""A server profile names its sender: STOW-RS at its url, or C-STORE at its DIMSE address."""

from __future__ import annotations

import pytest

from dicomtrolley.dimse_store import DICOMCStore
from dicomtrolley.exceptions import DICOMTrolleyError
from dicomtrolley.profiles import ServerProfile
from dicomtrolley.stow_rs import StowRS


def test_a_profile_sends_with_stow_rs_at_its_url_by_default() -> None:
    sender = ServerProfile(url="http://archive.example/dicom-web", workers=6).build_sender()
    assert isinstance(sender, StowRS)
    assert sender.destination == "http://archive.example/dicom-web/studies"
    assert sender.workers == 6


def test_a_c_store_profile_sends_to_its_host_port_and_ae_titles() -> None:
    profile = ServerProfile(sender="c-store", searcher="c-find", downloader="c-get", host="pacs.example", port=104,
                            aet="ME", aec="PACS")
    sender = profile.build_sender()
    assert isinstance(sender, DICOMCStore)
    assert (sender.destination, sender.aet) == ("PACS@pacs.example:104", "ME")


def test_a_sender_the_profile_cannot_reach_is_refused_naming_what_it_lacks() -> None:
    with pytest.raises(DICOMTrolleyError, match="sending with c-store needs host, port"):
        ServerProfile(url="http://archive.example/dicom-web", sender="c-store").build_sender()


def test_an_unknown_sender_is_refused_when_the_profile_is_made() -> None:
    with pytest.raises(ValueError, match="sender 'stow' is not one of"):
        ServerProfile(url="http://archive.example/dicom-web", sender="stow")
