"""``gnnreco bench explain``: LRP conservation and memory on every task model (see gnnreco.explain.bench)."""

from gnnreco.explain.bench import run

TITLE = "Explainability (LRP)"

__all__ = ["run", "TITLE"]
