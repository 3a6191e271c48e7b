# syntax=docker/dockerfile:1
# LLMProxy reference server. Build:  docker build -t llmproxy .
# Run:    docker run --rm -p 8080:8080 -v "$PWD/config.yaml:/etc/llmproxy/config.yaml:ro" llmproxy
# See docs/deploy.md.

# ---- build: install everything, then bundle the server into one JavaScript file with its V8 code cache
FROM node:20-slim AS build
WORKDIR /src
ENV CI=true
# pnpm pinned like package.json's packageManager, without corepack.
ARG PNPM_VERSION=12.4.2
RUN npx -y pnpm@${PNPM_VERSION} --version
# V8 flags the gateway will run with (e.g. --max-old-space-size=384): the code cache is written under them, since
# V8 rejects a cache made with other flags. The runtime stage sets the same NODE_OPTIONS.
ARG NODE_OPTIONS=
COPY . .
RUN npx -y pnpm@${PNPM_VERSION} install --frozen-lockfile \
 && npx -y pnpm@${PNPM_VERSION} run bundle

# ---- runtime: node and the bundle (no node_modules: every dependency is in it). The code cache was written by
# this same node image's binary in the build stage, so V8 accepts it.
FROM node:20-slim
ARG NODE_OPTIONS=
ENV NODE_ENV=production \
    NODE_OPTIONS=${NODE_OPTIONS} \
    LLMPROXY_CONFIG=/etc/llmproxy/config.yaml
WORKDIR /app
COPY --from=build /src/build/llmproxy.cjs /src/build/llmproxy.bundle.cjs /src/build/llmproxy.bundle.cjs.cache /app/
# A writable place for the usage spool and the quota state file (mount a volume there to keep them).
RUN mkdir -p /etc/llmproxy /var/lib/llmproxy && chown 1000:1000 /var/lib/llmproxy
# The image's `node` user, by number so that Kubernetes' runAsNonRoot can verify it.
USER 1000:1000
EXPOSE 8080
# The server handles SIGTERM itself: it stops accepting, drains in-flight streams (server.shutdownGraceMs), exits.
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "/app/llmproxy.cjs"]
