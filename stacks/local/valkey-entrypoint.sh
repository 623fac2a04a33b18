#!/bin/sh
# Like the official image's entrypoint: the server drops root and owns its data folder.
set -eu
if [ "${1:-}" = valkey-server ] && [ "$(id -u)" = 0 ]; then
  chown -R redis:redis /data
  exec setpriv --reuid=redis --regid=redis --init-groups "$@"
fi
exec "$@"
