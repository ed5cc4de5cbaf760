# local/nginx:1.22 — Debian's nginx laid out like the official nginx image, for the front
# door (the reverse proxy in front of the web services): configuration in
# /etc/nginx/conf.d/*.conf (the Debian default site removed), a `nginx` user as well as
# Debian's www-data, access log on stdout, error log on stderr, in the foreground.
ARG BASE_IMAGE=local/debian:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update -q \
    && apt-get install -y -q --no-install-recommends nginx \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
    && rm -f /etc/nginx/sites-enabled/default \
    && useradd --system --no-create-home --shell /usr/sbin/nologin nginx \
    && ln -sf /dev/stdout /var/log/nginx/access.log \
    && ln -sf /dev/stderr /var/log/nginx/error.log
EXPOSE 80
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
