#!/bin/sh
# Install ltfsee-globus on an EE node from a directory of wheels, as
# docs/install.md describes, step by step. Run as root:
#     sh install.sh WHEELHOUSE
# Settings (environment): PREFIX (/opt/ltfsee-globus), STATE_DIR
# (/var/lib/ltfsee-globus), SERVICE_USER (ltfsee), EEADM
# (/opt/ibm/ltfsee/bin/eeadm), PYTHON (python3.11), AFTER (gpfs.service);
# ROOT installs into a scratch tree instead of / (no user is made then, and
# the files stay owned by the caller).
set -eu
wheels=${1:?usage: install.sh WHEELHOUSE}
ROOT=${ROOT:-}
PREFIX=${PREFIX:-/opt/ltfsee-globus}
STATE_DIR=${STATE_DIR:-/var/lib/ltfsee-globus}
SERVICE_USER=${SERVICE_USER:-ltfsee}
EEADM=${EEADM:-/opt/ibm/ltfsee/bin/eeadm}
PYTHON=${PYTHON:-python3.11}
AFTER=${AFTER:-gpfs.service}
ENV_FILE=/etc/ltfsee-globus/env
say() { echo "install: $*"; }

# 1. the service user (a system account, no login)
if [ -z "$ROOT" ] && ! id "$SERVICE_USER" >/dev/null 2>&1; then
    say "user $SERVICE_USER"
    useradd --system --home-dir "$STATE_DIR" --shell /sbin/nologin "$SERVICE_USER"
fi

# 2. the code: a virtual environment, the wheels only (no network)
say "venv $ROOT$PREFIX"
"$PYTHON" -m venv "$ROOT$PREFIX"
"$ROOT$PREFIX/bin/pip" install --quiet --disable-pip-version-check --no-index \
    --find-links "$wheels" --upgrade ltfsee-globus

# 3. STATE_DIR, the service's own
say "state $ROOT$STATE_DIR"
install -d -m 0750 "$ROOT$STATE_DIR"
[ -n "$ROOT" ] || chown "$SERVICE_USER:$SERVICE_USER" "$STATE_DIR"

# 4. units, sudoers, the env template, rendered for this layout
"$ROOT$PREFIX/bin/ltfsee-globus" install-units --dest "${ROOT:-/}" --prefix "$PREFIX" \
    --state-dir "$STATE_DIR" --env "$ENV_FILE" --user "$SERVICE_USER" --eeadm "$EEADM" \
    --after "$AFTER"
if command -v visudo >/dev/null 2>&1; then
    visudo -cf "$ROOT/etc/sudoers.d/ltfsee-globus"
fi

# 5. the environment file: made once, with a new key; never overwritten
if [ ! -e "$ROOT$ENV_FILE" ]; then
    say "env $ROOT$ENV_FILE (a new AUTH_KEY)"
    key=$("$ROOT$PREFIX/bin/python" -c 'import secrets; print(secrets.token_urlsafe(32))')
    umask 027
    sed "s|^AUTH_KEY=.*|AUTH_KEY=$key|" "$ROOT/etc/ltfsee-globus/env.example" > "$ROOT$ENV_FILE"
    chmod 0640 "$ROOT$ENV_FILE"
    [ -n "$ROOT" ] || chgrp "$SERVICE_USER" "$ENV_FILE"
fi
say "done: edit $ENV_FILE (MANAGED_ROOTS, LTFSEE_LIB, TLS), then"
say "  systemctl daemon-reload && systemctl enable --now ltfsee-globus.service"
say "  sudo -u $SERVICE_USER $PREFIX/bin/ltfsee-globus doctor"
