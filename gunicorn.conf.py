"""gunicorn settings for ltfsee-globus, from the environment (and .env).

    gunicorn -c gunicorn.conf.py 'ltfsee_globus:create_app()'

BIND (default 0.0.0.0:5000), WORKERS (2), THREADS (8), TIMEOUT (60),
KEYFILE/CERTFILE (TLS when both are set), LOGLEVEL, ACCESS_LOG (true). With
STAGER=embedded (the default) each worker runs a stager thread that waits for
the STATE_DIR lock, so exactly one stages and another takes over if its worker
dies.
"""

import logging
import sys
from pathlib import Path

from environs import Env

_env = Env()
if Path(".env").is_file():
    _env.read_env(".env", recurse=False)

bind = [_env.str("BIND", "0.0.0.0:5000")]
worker_class = "gthread"
workers = _env.int("WORKERS", 2)
threads = _env.int("THREADS", 8)
timeout = _env.int("TIMEOUT", 60)
graceful_timeout = 30
keepalive = 5
control_socket_disable = True  # unused, and it would write under $HOME
logconfig = str(Path(__file__).resolve().parent / "logging.cfg")
_access_log = _env.bool("ACCESS_LOG", True)
# gunicorn's default line plus the request's duration in milliseconds
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(M)sms'
keyfile = _env.str("KEYFILE", None)
certfile = _env.str("CERTFILE", None)
if bool(keyfile) != bool(certfile):
    sys.exit("gunicorn.conf.py: set both KEYFILE and CERTFILE for TLS, or neither")


def _check_settings():
    """Fail fast, with one clear message, when the configuration cannot work.

    Runs when gunicorn reads this file, so `--check-config` reports it too.
    """
    from ltfsee_globus.config import ConfigError, load_settings

    try:
        load_settings()
    except ConfigError as exc:
        print(f"ltfsee-globus: {exc}", file=sys.stderr)
        sys.exit(3)


_check_settings()


def post_worker_init(worker):
    """Apply LOGLEVEL and ACCESS_LOG, start the embedded stager in this worker."""
    svc = worker.wsgi.extensions["ltfsee"]
    logging.getLogger("ltfsee_globus").setLevel(svc.settings.LOGLEVEL.upper())
    logging.getLogger("gunicorn.access").disabled = not _access_log
    if svc.settings.STAGER == "embedded":
        svc.start_stager()
