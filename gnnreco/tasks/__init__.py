"""gnnreco.tasks."""
