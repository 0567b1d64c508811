"""DuckLake: one dataset written and analysed by many processes, and watching its snapshots."""
