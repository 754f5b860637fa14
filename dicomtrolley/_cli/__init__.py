"""The parts of the ``dicomtrolley`` command, one job per module.

:mod:`dicomtrolley.cli` only builds the parser and dispatches; each subcommand
lives in a module of its own here (``search``, ``download``, ``export``) with
an ``add_parser`` and a ``run``, beside what they share: the options every
command takes (``options``), the server they talk to (``server``), the exit
statuses (``exits``) and the hints for mistyped options (``typos``).
"""
