"""gunicorn settings for a source checkout: the package's own, in
ltfsee_globus/gunicorn_conf.py (an installed wheel uses
`-c python:ltfsee_globus.gunicorn_conf`).

    gunicorn -c gunicorn.conf.py 'ltfsee_globus:create_app()'
"""

from ltfsee_globus.gunicorn_conf import *  # noqa: F403
