"""gunicorn settings of bare_app.py: the service's (ltfsee_globus/gunicorn_conf.py)
as api_load.py runs it, without the service's hooks."""

import os

bind = [os.environ["BIND"]]
worker_class = "gthread"
workers = int(os.environ.get("WORKERS", "2"))
threads = int(os.environ.get("THREADS", "8"))
timeout = 60
keepalive = 5
control_socket_disable = True
accesslog = "-" if os.environ.get("ACCESS_LOG", "true") == "true" else None
