"""The database underneath: cursors, statements, transactions, names, the project's schema."""
