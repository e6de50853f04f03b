-- Runs once, when the postgres-data volume is empty (docker-entrypoint-initdb.d).
-- POSTGRES_DB creates the "auth" database; this creates the others.
-- Each service runs its own migrations on start.
CREATE DATABASE history;
CREATE DATABASE media;
CREATE DATABASE admin;
