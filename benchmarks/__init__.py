"""Side-by-side performance of this package, dicomtrolley 4.1.0, dicomweb-client and curl.

Run everything with ``bash benchmarks/run.sh`` (see ``docs/performance.md``).
The modules: :mod:`benchmarks.data` generates and caches the test data,
:mod:`benchmarks.measure` runs one client in a fresh process and measures it,
:mod:`benchmarks.cases` says what each client does and how its output is
checked, :mod:`benchmarks.report` writes the table, and :mod:`benchmarks.run`
ties them together. ``client_current.py`` and ``client_reference.py`` are the
client programs, run as scripts (the second in a virtual environment that holds
dicomtrolley 4.1.0, so it cannot import anything from this repository).
"""
