-- Runs once, when the postgres service starts on an empty data volume
-- (files in /docker-entrypoint-initdb.d are skipped afterwards).
-- Holds the tables that jobs publish to with outputs.table.connection: {url_env: ANOMALIES_DB_URL}.
CREATE DATABASE anomalies OWNER airflow;
