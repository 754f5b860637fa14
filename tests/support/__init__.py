"""Helpers the test suite and the demo share: synthetic DICOM data and a real Orthanc."""
