"""``flask import-csv``: bulk import of events from CSV files, directories, stdin and URLs."""
