"""gnnreco.graph."""
