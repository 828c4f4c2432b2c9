"""Benchmarks behind ``gnnreco bench <suite>``.

Each suite is a module ``gnnreco.bench.<suite>`` exposing ``run(quick: bool = False, **options) -> str``
that returns a Markdown table (ratios against the reference implementation measured side by side in
the same process). :func:`gnnreco.bench.report.write_section` records it in ``docs/benchmarks.md``.
"""

SUITES = ("ops", "graph", "io", "tracking", "calo")
