"""The write path: row shapes, schemas, the writer and its group commit, loading files."""
