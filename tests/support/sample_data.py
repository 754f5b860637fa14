"""The sample studies of the test suite: the package's demo data (:mod:`dicomtrolley.demo.sample_data`)."""

from dicomtrolley.demo.sample_data import (
    LARGE_STUDY_UID,
    MANIFEST_NAME,
    UID_PREFIX,
    SampleData,
    SampleInstance,
    SampleSeries,
    SampleStudy,
    generate_sample_data,
    load_manifest,
    sample_uid,
)

__all__ = [
    "LARGE_STUDY_UID",
    "MANIFEST_NAME",
    "UID_PREFIX",
    "SampleData",
    "SampleInstance",
    "SampleSeries",
    "SampleStudy",
    "generate_sample_data",
    "load_manifest",
    "sample_uid",
]
