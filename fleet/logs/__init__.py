"""Mail-server log telemetry: which accounts still log in with TLS 1.0/1.1 or without TLS.

The pure part (no database, no files)::

    parser.py     one log line → an event (syslog/journald/Dovecot-file prefixes;
                  Dovecot 2.3 login-process lines, Postfix 3.x smtpd lines)
    join.py       events → connections (Postfix: per process between connect and
                  disconnect; Dovecot: the login line itself), bounded open state
    aggregate.py  connections → per (day, account) counters; accounts → domains

The I/O part: ``ingest.py`` (files and standard input, checkpoints, flushing through
:mod:`fleet.repositories.clients`) and ``cli.py`` (``tlsfleet logs ingest``).
docs/logs.md says what to configure in Dovecot and Postfix.
"""
