"""gnnreco.export."""
