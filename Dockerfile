# League Manager: one image for every process (web, worker, beat, consumers, setup).
# What a container runs is chosen by its command and LEAGUE_SERVICE (docker-compose.yml).
#
#   docker build -t league-manager:local .                                    # official base
#   docker build --build-arg BASE_IMAGE=local/python:3.11 -t league-manager:local .   # offline
#
# BASE_IMAGE is any Debian-like image with `python` 3.11 and its venv module: the official
# slim image (pinned) by default, or local/python:3.11 (docker/offline/python.Dockerfile)
# where no registry is reachable (docker/build_offline_images.sh). Two stages: the
# dependencies are installed into /opt/venv in the first, and only that venv and the code
# reach the final image (no pip cache, no pip configuration, no build arguments).
ARG BASE_IMAGE=python:3.11.13-slim-bookworm

FROM ${BASE_IMAGE} AS deps
# A pip.conf for this stage only (index, certificate bundle behind an HTTPS proxy); empty
# means pip's defaults. docker/build_offline_images.sh passes the host's pip configuration.
ARG PIP_CONF=""
COPY requirements.txt /tmp/requirements.txt
RUN if [ -n "$PIP_CONF" ]; then printf '%s\n' "$PIP_CONF" > /etc/pip.conf; fi \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check -r /tmp/requirements.txt

FROM ${BASE_IMAGE}

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DATA_DIR=/var/lib/league \
    STATIC_ROOT=/app/staticfiles

# The code is root's and read-only to the app; its home is the data directory, the one place
# it writes (gunicorn's control socket goes to ~/.gunicorn).
RUN groupadd --system league \
    && useradd --system --gid league --home-dir /var/lib/league --no-create-home --shell /usr/sbin/nologin league

COPY --from=deps /opt/venv /opt/venv
WORKDIR /app
COPY . .

# Static files are collected at build time with DEBUG off (hashed names, compressed).
# Settings refuse to load without SECRET_KEY/ALLOWED_HOSTS, so this RUN line alone gets
# dummy values; they are not kept in the image's environment.
ARG BUILD_SECRET_KEY=collectstatic-only-not-a-secret
RUN DEBUG=false SECRET_KEY="$BUILD_SECRET_KEY" ALLOWED_HOSTS=localhost \
        python manage.py collectstatic --noinput >/dev/null \
    && mkdir -p "$DATA_DIR" \
    && chown -R league:league "$DATA_DIR"

USER league

EXPOSE 8000

CMD ["gunicorn", "league.wsgi", "--bind", "0.0.0.0:8000", "--workers", "2", "--access-logfile", "-"]
