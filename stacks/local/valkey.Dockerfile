# Redis 7 from Debian standing in for Valkey (same protocol), started the way the official valkey
# image starts: `valkey-server <args>` runs as the unprivileged user, never as root.
ARG DATA_BASE_IMAGE
FROM ${DATA_BASE_IMAGE}
RUN ln -s /usr/bin/redis-server /usr/local/bin/valkey-server && ln -s /usr/bin/redis-cli /usr/local/bin/valkey-cli \
  && mkdir /data && chown redis:redis /data
COPY valkey-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
WORKDIR /data
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["valkey-server"]
