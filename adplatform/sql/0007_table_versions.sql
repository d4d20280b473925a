-- Each ad-server worker holds every user profile in memory and reloads them every minute. It now reloads
-- only when online_ads."user" changed: every statement that writes the table stamps its transaction's id
-- here, in the writer's own transaction, and a reload reads the stamp and the rows in one snapshot. A
-- transaction id never repeats (a TRUNCATE of both tables, as a reset's, then new writes included).
CREATE TABLE online_ads.table_versions (
    name    text PRIMARY KEY,
    version bigint NOT NULL
);

CREATE FUNCTION online_ads.stamp_table_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO online_ads.table_versions (name, version)
    VALUES (TG_ARGV[0], pg_current_xact_id()::text::bigint)
    ON CONFLICT (name) DO UPDATE SET version = EXCLUDED.version;
    RETURN NULL;
END
$$;

CREATE TRIGGER user_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON online_ads."user"
    FOR EACH STATEMENT EXECUTE FUNCTION online_ads.stamp_table_version('user');

INSERT INTO online_ads.table_versions (name, version) VALUES ('user', pg_current_xact_id()::text::bigint);
