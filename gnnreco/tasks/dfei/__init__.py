"""gnnreco.tasks.dfei."""
