"""How incremental states merge, retract and finalise."""
