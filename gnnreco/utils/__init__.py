"""Small utilities shared by every task (progress bars, plotting, logging)."""
