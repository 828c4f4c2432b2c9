"""gnnreco.tasks.tracking."""
