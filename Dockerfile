# League Manager: one image for every process (web, worker, beat, consumers, setup).
# What a container runs is chosen by its command and LEAGUE_SERVICE (docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DATA_DIR=/var/lib/league \
    STATIC_ROOT=/app/staticfiles

RUN groupadd --system league \
    && useradd --system --gid league --home-dir /app --no-create-home --shell /usr/sbin/nologin league

WORKDIR /app

# Dependencies first: this layer is reused while only the code changes.
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .

# Static files are collected at build time with DEBUG off (hashed names, compressed).
# Settings refuse to load without SECRET_KEY/ALLOWED_HOSTS, so this RUN line alone gets
# dummy values; they are not kept in the image's environment.
ARG BUILD_SECRET_KEY=collectstatic-only-not-a-secret
RUN DEBUG=false SECRET_KEY="$BUILD_SECRET_KEY" ALLOWED_HOSTS=localhost \
        python manage.py collectstatic --noinput \
    && mkdir -p "$DATA_DIR" \
    && chown -R league:league "$DATA_DIR"

USER league

EXPOSE 8000

CMD ["gunicorn", "league.wsgi", "--bind", "0.0.0.0:8000", "--workers", "2", "--access-logfile", "-"]
