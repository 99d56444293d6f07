#!/bin/sh
# The image's commands: web | worker | beat | migrate | manage ARGS... | any command.
set -eu
# Metrics of processes that ran before this start are stale: start from an empty folder.
if [ -n "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
  mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
  find "$PROMETHEUS_MULTIPROC_DIR" -mindepth 1 -delete
fi
command="${1:-web}"
[ "$#" -gt 0 ] && shift
case "$command" in
  web)
    exec gunicorn -c python:console.gunicorn_conf console.wsgi:application \
      --bind "0.0.0.0:${PORT:-8000}" --workers "${WEB_WORKERS:-2}" \
      --worker-class gthread --threads "${WEB_THREADS:-4}" --preload --reuse-port "$@" ;;
  worker)
    exec celery -q -A console worker -l INFO --concurrency "${WORKER_CONCURRENCY:-4}" \
      --without-gossip --without-mingle "$@" ;;
  beat)
    exec celery -q -A console beat -l INFO --schedule /app/var/celerybeat-schedule "$@" ;;
  migrate)
    exec python3 manage.py migrate --noinput "$@" ;;
  manage)
    exec python3 manage.py "$@" ;;
  *)
    exec "$command" "$@" ;;
esac
