"""Benchmarks behind ``gnnreco bench <suite>``.

Each suite is a module ``gnnreco.bench.<suite>`` exposing ``run(quick: bool = False, **options) -> str``
that returns a Markdown table (ratios against the reference implementation measured side by side in
the same process). :func:`gnnreco.bench.report.write_section` records it in ``docs/benchmarks.md``.
"""

from pathlib import Path

#: every module of this package except the report helpers is a suite
SUITES = tuple(sorted(p.stem for p in Path(__file__).parent.glob("*.py") if not p.stem.startswith("_")
                      and p.stem != "report"))
