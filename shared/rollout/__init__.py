"""Rollout strategies: bandit routing state and progressive rollouts with SLO gates.

The decisions are pure functions (``shared.routing.bandit``, ``shared.rollout.gates``);
this package keeps their state in table storage, shared by every router instance:

* ``tables``: the table clients (one service client per process);
* ``arms``: bandit arm statistics, ETag-guarded increments;
* ``ledger``: which deployment served each request id (feedback);
* ``windows``: per-deployment outcomes per time bucket (status class, latency);
* ``runtime``: the router's in-memory side: cheap per-request recording, periodic flush;
* ``state``: rollout state; ``lease``: the one-actor lock; ``controller``: the timer's
  gate evaluation; ``cli``: ``scorefn rollout``.
"""
