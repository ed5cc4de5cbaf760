# local/python:3.11 — the stand-in for the official python:3.11-slim image when no registry
# is reachable: Debian's Python 3.11 with venv on the local base (docker/make_base_image.sh).
# `python` is on PATH; pip is used only inside virtual environments (/opt/venv in the
# app image), never for the system interpreter.
ARG BASE_IMAGE=local/debian:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update -q \
    && apt-get install -y -q --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
    && ln -s /usr/bin/python3 /usr/local/bin/python
CMD ["python3"]
