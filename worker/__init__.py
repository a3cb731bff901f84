"""The arq worker: sweeps (discovery, endpoint scans, closing), the reconciler and the
nightly schedule.

- :mod:`worker.settings`: :func:`~worker.settings.worker_settings`, arq's settings
  built from the fleet's settings at start (never at import);
  :func:`~worker.settings.run_worker` runs them (``tlsfleet worker``).
- :mod:`worker.context`: the typed context every job gets, built in ``on_startup``.
- :mod:`worker.jobs`: the jobs, thin: ids in, :mod:`fleet.sweeps` does the work.
- :mod:`worker.schedule`: the nightly cron expression in arq's terms.
- :mod:`worker.options`: the worker's own knobs (``TLSFLEET_WORKER_*``).
"""
