"""Read models folded from the log and persisted in SQLite."""
