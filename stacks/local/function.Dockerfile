# One bundle folder (dist/<name>/, made on the host by scripts/build.ts) on the local Node runtime.
ARG NODE_IMAGE
FROM ${NODE_IMAGE}
COPY --chown=flagmeter:flagmeter bundle/ /app/
