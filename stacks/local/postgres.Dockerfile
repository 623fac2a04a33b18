# PostgreSQL 15 from Debian, behaving like the official image as far as stacks/app.yml uses it:
# POSTGRES_USER / POSTGRES_DB / POSTGRES_PASSWORD_FILE create the cluster on first start, and a
# `postgres -c …` command runs the server with those settings.
ARG DATA_BASE_IMAGE
FROM ${DATA_BASE_IMAGE}
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
  PGDATA=/var/lib/postgresql/data
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["postgres"]
