"""gnnreco.bench."""
