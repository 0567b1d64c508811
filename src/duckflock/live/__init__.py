"""Live analyses: definitions, the scheduler, refreshes, results and subscriptions."""
