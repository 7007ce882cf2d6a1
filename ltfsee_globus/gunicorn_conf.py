"""gunicorn settings for ltfsee-globus, from the service's own settings.

    gunicorn -c python:ltfsee_globus.gunicorn_conf 'ltfsee_globus:create_app()'
    gunicorn -c gunicorn.conf.py 'ltfsee_globus:create_app()'    (a source checkout)

A module of the package, so an installed wheel serves without a source tree.
Logging comes from the packaged logging.cfg (gunicorn's --log-config overrides).

BIND (default 0.0.0.0:5000), WORKERS (2), THREADS (8), TIMEOUT (60),
KEYFILE/CERTFILE (TLS when both are set), LOGLEVEL, ACCESS_LOG (true) are
validated with every other setting (`ltfsee-globus check-config`). With
STAGER=embedded (the default) each worker runs a stager thread that waits for
the STATE_DIR lock, so exactly one stages and another takes over if its worker
dies. Workers (and a separate stager) share Prometheus counters through
PROMETHEUS_MULTIPROC_DIR, STATE_DIR/metrics unless set.
"""

import logging
import sys
from importlib.resources import files

from gunicorn import glogging


def _settings():
    """Fail fast, with one clear message, when the configuration cannot work.

    Runs when gunicorn reads this file, so `--check-config` reports it too.
    """
    from ltfsee_globus.config import ConfigError, load_settings

    try:
        return load_settings()
    except ConfigError as exc:
        print(f"ltfsee-globus: {exc}", file=sys.stderr)
        sys.exit(3)


_s = _settings()

bind = [_s.BIND]
worker_class = "gthread"
workers = _s.WORKERS
threads = _s.THREADS
timeout = _s.TIMEOUT
graceful_timeout = 30
keepalive = 5
control_socket_disable = True  # unused, and it would write under $HOME
logconfig = str(files("ltfsee_globus") / "logging.cfg")
# gunicorn's default line plus the request's duration in milliseconds
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(M)sms'
keyfile = _s.KEYFILE or None
certfile = _s.CERTFILE or None


class _Logger(glogging.Logger):
    """gunicorn's logger, told whether access lines are wanted. With a log
    config gunicorn builds every access line (its atoms: a dict per request)
    even when the access logger is off; with ACCESS_LOG=false it builds none."""

    def _compute_access_log_enabled(self) -> bool:  # gunicorn 27: its setup() asks once
        return _s.ACCESS_LOG and super()._compute_access_log_enabled()


logger_class = _Logger


def on_starting(server):
    """Share Prometheus counters between the workers (before any imports
    prometheus-client) and clear what a previous run's workers left. Then
    bring the store's schema up to date, once, before any worker starts: a
    long migration (a SQLite table rebuilt: about a minute per ten million
    files) would outlast a worker's boot TIMEOUT, and a sibling worker that
    gave up waiting for the lock would make gunicorn stop them all, the
    migrating one with it, at every start."""
    from ltfsee_globus.config import share_metrics

    share_metrics(_s)
    from ltfsee_globus.metrics import multiproc_dir, prepare_multiproc_dir

    prepare_multiproc_dir(multiproc_dir())
    from ltfsee_globus.store import StoreUnavailable, open_store

    try:
        open_store(_s).close()
    except StoreUnavailable as exc:  # the workers report it, as they would have
        server.log.warning("store not migrated before the workers start: %s", exc)


def post_worker_init(worker):
    """Apply LOGLEVEL and ACCESS_LOG, start fetching the token issuers' keys
    and the embedded stager in this worker."""
    from ltfsee_globus.api.context import services

    svc = services(worker.wsgi)
    logging.getLogger("ltfsee_globus").setLevel(svc.settings.LOGLEVEL.upper())
    logging.getLogger("gunicorn.access").disabled = not _s.ACCESS_LOG
    svc.token_keys.start()
    if svc.settings.STAGER == "embedded":
        svc.start_stager()
