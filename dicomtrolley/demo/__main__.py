"""``python -m dicomtrolley.demo serve``: a local Orthanc with the sample studies, until Ctrl-C.

It generates the sample studies into ``--data`` (once; a complete folder is
reused), starts Orthanc with its storage in ``--workdir`` (a temporary folder by
default), uploads the studies, prints where it answers, and writes
``<workdir>/ready.json`` for scripts. Ctrl-C or SIGTERM stops it.

Exit status: 0 after Ctrl-C or SIGTERM, 1 when Orthanc stopped by itself,
2 for a mistake on the command line, 3 when it could not start: a port is
taken, or Orthanc is not installed (one line says which, and what to do).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

EXIT_CANNOT_START = 3

DEFAULT_HTTP_PORT = 8042
DEFAULT_DICOM_PORT = 4242
"""Orthanc's own defaults: the demo answers at ``http://127.0.0.1:8042/dicom-web``."""


def default_data_dir() -> Path:
    """Where the sample studies are generated: ``$XDG_CACHE_HOME/dicomtrolley/sample`` (``~/.cache``)."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "dicomtrolley" / "sample"


def serve(data: Path, workdir: Path | None, http_port: int, dicom_port: int, large: bool) -> int:
    """Run the demo server until Ctrl-C or SIGTERM; see the module. Returns the exit status."""
    # Loaded here: importing the package (or asking for --help) generates and starts nothing.
    from dicomtrolley.demo.orthanc import STOP_TIMEOUT, check_port_free, find_orthanc, running_orthanc
    from dicomtrolley.demo.sample_data import generate_sample_data

    find_orthanc()
    check_port_free(http_port)
    check_port_free(dicom_port)
    # SIGTERM unwinds like Ctrl-C, so Orthanc is stopped and ready.json removed.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(0))
    timings: dict[str, float] = {}
    started = time.perf_counter()
    sample = generate_sample_data(data, large=large)
    timings["generate"] = time.perf_counter() - started
    overrides = {key: port for key, port in (("HttpPort", http_port), ("DicomPort", dicom_port)) if port}

    with ExitStack() as stack:
        # Storage that is thrown away needs no clean stop (which takes Orthanc 3.5 s).
        stop_timeout = STOP_TIMEOUT if workdir is not None else 0.3
        if workdir is None:
            workdir = Path(tempfile.mkdtemp(prefix="dicomtrolley-orthanc-"))
            stack.callback(shutil.rmtree, workdir, True)
        ready_path = workdir / "ready.json"
        ready_path.unlink(missing_ok=True)
        started = time.perf_counter()
        server = stack.enter_context(running_orthanc(workdir, stop_timeout=stop_timeout, config=overrides))
        process = server.process
        assert process is not None
        timings["start"] = time.perf_counter() - started
        started = time.perf_counter()
        server.upload(sample.paths())
        timings["upload"] = time.perf_counter() - started

        ready: dict[str, Any] = {
            "base_url": server.base_url,
            "dicomweb_url": server.dicomweb_url,
            "wado_url": server.wado_url,
            "http_port": server.http_port,
            "dicom_port": server.dicom_port,
            "aet": server.aet,
            "move_destination": list(server.move_destination),
            "pid": process.pid,
            "log": str(server.log_path),
            "studies": [
                {"uid": s.uid, "patient_id": s.patient_id, "description": s.description, "instances": len(s.instances)}
                for s in sample.studies
            ],
        }
        stack.callback(ready_path.unlink, True)
        staging = ready_path.with_suffix(".tmp")
        staging.write_text(json.dumps(ready, indent=2, ensure_ascii=False), encoding="utf-8")
        staging.rename(ready_path)

        print(f"Orthanc {server.base_url} (DICOM {server.aet}@127.0.0.1:{server.dicom_port})", flush=True)
        print(f"DICOMweb: {server.dicomweb_url}", flush=True)
        print(f"WADO-URI: {server.wado_url}", flush=True)
        for study in sample.studies:
            print(f"  study {study.uid}  {study.patient_id}  {study.description}  ({len(study.instances)} instances)",
                  flush=True)
        print("timings: " + ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()), flush=True)
        print(f"ready file: {ready_path}; Ctrl-C or SIGTERM to stop", flush=True)
        while process.poll() is None:
            time.sleep(0.5)
        print(f"Orthanc exited on its own ({process.returncode}); log tail:\n{server.log_tail()}", file=sys.stderr)
        return 1


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (0 to 65535; 0: a free one)")
    return port


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m dicomtrolley.demo``; returns the exit status."""
    from dicomtrolley.demo.orthanc import DemoServerError, PortInUseError

    parser = argparse.ArgumentParser(prog="python -m dicomtrolley.demo",
                                     description="A local Orthanc loaded with sample studies, to try dicomtrolley on.")
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("serve", help="start Orthanc loaded with the sample studies until Ctrl-C/SIGTERM")
    command.add_argument("--port", type=_port, default=DEFAULT_HTTP_PORT,
                         help="HTTP port (default: %(default)s; 0: a free one)")
    command.add_argument("--dicom-port", type=_port, default=DEFAULT_DICOM_PORT,
                         help="DICOM port (default: %(default)s; 0: a free one)")
    command.add_argument("--data", type=Path, default=default_data_dir(),
                         help="sample studies folder, generated if incomplete (default: %(default)s)")
    command.add_argument("--workdir", type=Path,
                         help="Orthanc's storage, log and ready.json (default: a temporary folder, removed)")
    command.add_argument("--large", action="store_true", help="also a 300-instance CT study (157 MB)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return serve(args.data, args.workdir, args.port, args.dicom_port, args.large)
    except DemoServerError as error:
        hint = "; choose another with --port / --dicom-port (0: a free one)"
        print(f"python -m dicomtrolley.demo: {error}{hint if isinstance(error, PortInUseError) else ''}",
              file=sys.stderr)
        return EXIT_CANNOT_START
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
