"""Plan-then-apply cleanup of what failed detaches left behind (``brick-agent cleanup``).

* :mod:`.items` — a plan item (kind, object, evidence, exact action, stable id) and the
  result of applying one;
* :mod:`.examine` — from the host views (and the ledger), whether one object is a
  leftover the cleanup may remove, with its evidence, or why it is kept;
* :mod:`.plan` — the plan: candidates from the leftover audit, each examined;
* :mod:`.apply` — each item re-examined under its lock right before acting, acted on
  only when its evidence is unchanged;
* :mod:`.actions` — what the cleanup may do, over the privileged entrypoints detach
  uses (the only module here that imports ``brick_agent.privileged``);
* :mod:`.command` — the ``brick-agent cleanup`` command.

Nothing is imported here: the CLI's parser imports :mod:`.command` on every start.
"""
