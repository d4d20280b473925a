-- Pacing modes (issue 16): 'asap' spends a slot's budget as fast as the campaign wins, 'even' spreads it
-- over the slot. Every campaign stored before this migration keeps its behaviour: 'asap'.
ALTER TABLE online_ads.ads ADD COLUMN pacing_mode text NOT NULL DEFAULT 'asap'
    CHECK (pacing_mode IN ('asap', 'even'));
