"""The lab's ``halfv`` subcommands, added through the ``register_commands`` hook.

:func:`halfv_lab.plugin.register_commands` calls each module's ``add_parser``:
``halfv demo`` (:mod:`halfv_lab.cli.demo_cmd`), ``halfv bench accuracy``
(:mod:`halfv_lab.cli.bench_cmd`, :mod:`halfv_lab.cli.bench_accuracy_cmd`) and the
deprecated ``halfv bench-accuracy``.
"""
