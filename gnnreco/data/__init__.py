"""gnnreco.data."""
