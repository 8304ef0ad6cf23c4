#!/bin/sh
# Container entrypoint for web and workers.
#
# With LOUPE_MIGRATE=1 (the web service in compose.yaml) pending migrations are applied
# before the command starts; workers leave it at 0 and start after web is healthy, so two
# processes never migrate at the same time.  `migrate` is idempotent: a restart applies
# nothing twice.
set -eu
cd "$(dirname "$0")/.."   # the app root (/opt/loupe in the images)
if [ "${LOUPE_MIGRATE:-0}" = "1" ]; then
    python manage.py migrate --noinput
fi
exec "$@"
