-- The original platform's user table, read by its own column names: online_ads.user(id, age, gender,
-- internet_usage, income_bukcet, user_agent_string, device_type, websites, movies, music, program, books,
-- negatives, positives) (the misspelling is theirs). Our key stays user_id and our code is unchanged:
-- id and income_bukcet are generated from user_id and income_bucket (always equal, never written twice);
-- the profile columns we do not keep are added, empty (NULL), so their SELECTs run unchanged.
ALTER TABLE online_ads."user"
    ADD COLUMN id                text GENERATED ALWAYS AS (user_id) STORED,
    ADD COLUMN income_bukcet     text GENERATED ALWAYS AS (income_bucket) STORED,
    ADD COLUMN internet_usage    text,
    ADD COLUMN user_agent_string text,
    ADD COLUMN websites          text,
    ADD COLUMN movies            text,
    ADD COLUMN music             text,
    ADD COLUMN program           text,
    ADD COLUMN books             text,
    ADD COLUMN negatives         text,
    ADD COLUMN positives         text;
-- Their lookups are by id: an index, as the original key had.
CREATE UNIQUE INDEX user_id_original_idx ON online_ads."user" (id);
