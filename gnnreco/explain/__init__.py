"""gnnreco.explain."""
