"""Qt item models and undo commands: thin adapters over core stores, never copies of their data."""
