-- The spend ledger: every charged feedback event once (event_id is unique per charge), so per-campaign
-- spend in PostgreSQL is exact even when Kafka delivers an event twice.
CREATE TABLE online_ads.spend_events (
    event_id     text PRIMARY KEY,
    campaign_id  text        NOT NULL,
    amount       numeric(20, 6) NOT NULL CHECK (amount > 0),
    occurred_at  timestamptz NOT NULL,
    booked_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX spend_events_campaign_idx ON online_ads.spend_events (campaign_id);
