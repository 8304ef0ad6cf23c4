#!/bin/sh
# Build-time checks shared by the images and the test suite.
#
# docker/Dockerfile and docker/Dockerfile.gpu run this script as a build step, and
# tests/ops/test_docker.py runs the very same script on the CI machine, so a check that
# passes in CI is the check the image build makes (and the other way round).
#
# It needs no database server or broker: settings fall back to a throw-away SQLite file.
set -eu
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"

# The worker can import every task module, and the selection library imports without Django.
"$PY" -c "import os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'config.settings'); import django; django.setup(); import config.celery, annotate.tasks, selection"
# Django's system checks (URLs, models, admin, templates).
"$PY" manage.py check --fail-level WARNING
# Every model change has its migration (the entrypoint only applies migrations, never writes them).
"$PY" manage.py makemigrations --check --dry-run
# Static files are collected into the image so the web server + WhiteNoise serve them without finders.
"$PY" manage.py collectstatic --noinput --verbosity 0
echo "build-check: ok"
