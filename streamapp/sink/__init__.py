"""The invocation sink: ``service.py`` (the faust Service: lifecycle and wiring only),
``consumer.py`` (subscription, rebalance, pause/resume, commits), ``invoker.py`` (one record
through its triggers: attempts and verdicts), ``records.py`` (what it writes: invocations records
and dead letters), ``parts.py`` (its injected collaborators), ``wiring.py`` (a worker's parts;
the only module here that imports the app), ``lanes.py`` (per-tenant limits and 429 back-off),
``outcomes.py`` (the store of final records that makes a replay skip what already ran). Its
decisions are pure functions in ``domain/sink_rules.py``, ``domain/triggers.py`` (which
triggers an event fires) and ``domain/invocations.py`` (the call and how its answer is judged)."""
