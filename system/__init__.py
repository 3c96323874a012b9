"""The machine a score is made on: what it is and how it is set (recorded with every result)."""
