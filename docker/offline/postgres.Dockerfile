# local/postgres:15 — Debian's PostgreSQL 15 with the parts of the official image's contract
# that docker-compose.yml uses: POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB, the scripts
# in /docker-entrypoint-initdb.d on the first start, data in /var/lib/postgresql/data,
# pg_isready, logs on stderr. Runs as the `postgres` user, never root.
ARG BASE_IMAGE=local/debian:bookworm
FROM ${BASE_IMAGE}
RUN mkdir -p /etc/postgresql-common \
    && echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf \
    && apt-get update -q \
    && apt-get install -y -q --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
    && mkdir -p /var/lib/postgresql/data /var/run/postgresql /docker-entrypoint-initdb.d \
    && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql \
    && chmod 700 /var/lib/postgresql/data
ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
USER postgres
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint.sh"]
CMD ["postgres"]
