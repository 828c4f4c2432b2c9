"""gnnreco.nn."""
