"""gnnreco.sim."""
