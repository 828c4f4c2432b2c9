"""gnnreco.tasks.calo."""
