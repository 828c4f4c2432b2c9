"""gnnreco.cli."""
