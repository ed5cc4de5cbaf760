# local/moto — moto_server as motoserver/moto runs it (port 5000, all addresses), taken from
# the League Manager image: its /opt/venv already holds moto[server] at the version
# requirements.txt pins (the embedded stack of `manage.py runstack` uses it), so the
# offline build installs it once and the two images share their layers. User `league`.
ARG APP_IMAGE=league-manager:latest
FROM ${APP_IMAGE}
USER league
EXPOSE 5000
ENTRYPOINT ["moto_server", "-H", "0.0.0.0", "-p", "5000"]
CMD []
