"""Maintenance windows: the schedule (pure) and the records (database)."""
