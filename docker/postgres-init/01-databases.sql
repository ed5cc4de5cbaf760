-- Runs once, when the postgres volume is first initialised (docker-entrypoint-initdb.d).
-- The monolith uses POSTGRES_DB (league); each microservice owns one database here.
-- With an existing volume, create them by hand: docs/DEPLOY.md, "Databases".
CREATE DATABASE league_teams;
CREATE DATABASE league_transfers;
CREATE DATABASE league_fixtures;
