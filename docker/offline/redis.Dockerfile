# local/redis:7.0 — Debian's Redis 7.0 as the official image runs it: in the foreground,
# reachable from the compose network, data in /data, logs on stdout. User `redis`.
ARG BASE_IMAGE=local/debian:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update -q \
    && apt-get install -y -q --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
    && mkdir -p /data && chown redis:redis /data
WORKDIR /data
USER redis
EXPOSE 6379
CMD ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--dir", "/data", "--logfile", ""]
