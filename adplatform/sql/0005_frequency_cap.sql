-- Frequency caps (issue 16): N ads per user per window, in its canonical spelling (3/1h, 10/1d, 5/flight).
-- NULL: uncapped, which every campaign stored before this migration is.
ALTER TABLE online_ads.ads ADD COLUMN frequency_cap text;
