"""gnnreco.ops."""
