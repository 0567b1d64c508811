"""Live analyses: definitions, the scheduler, refreshes, results and subscriptions.

- ``scheduler``: the Scheduler (one per Database) and its thread: definitions, dispatch,
  watchdog, ``refresh()``, ``close()``.
- ``registry``: the analyses by name and the one lock that guards their schedules.
- ``record``: one analysis split by owner — Spec (immutable), Schedule (scheduler),
  Changes (writer's notices → refresher), State (the run's analysis thread).
- ``runs``: the analysis threads: run, time limit, publish.
- ``notices``: what a write means for each analysis, through one fan-out.
- ``subscriptions``: result, watch, watch_async, subscribe.
- ``refresh``, ``pinned``, ``steps``: what one run does (full, incremental, a window).
- ``windows``: sliding windows over now(); ``clock``: the time they read.
- ``results``: Result, Mode, Mailbox, Subscription; ``definitions``: kept definitions.
- ``internals``: the documented internal interface for tests and debugging.
- ``plan/``: what a query is (shape, plan, sources); ``fold/``: how states merge.
"""
