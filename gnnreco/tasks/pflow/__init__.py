"""gnnreco.tasks.pflow."""
