"""The embedded SQLite store and the files ledger that lives beside the data."""
