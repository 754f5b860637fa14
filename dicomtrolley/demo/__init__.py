"""A local DICOM server to try dicomtrolley on: Orthanc loaded with generated sample studies.

``python -m dicomtrolley.demo serve`` starts it (see :mod:`dicomtrolley.demo.__main__`);
:func:`~dicomtrolley.demo.orthanc.running_orthanc` starts one from Python, as the
test suite does. It needs Debian's ``orthanc`` and ``orthanc-dicomweb`` packages.

Importing this package costs nothing: the server and the sample generator
(:mod:`~dicomtrolley.demo.orthanc`, :mod:`~dicomtrolley.demo.sample_data`) load when used.
"""
