-- Initial schema of the ad platform. Money is NUMERIC (exact); the services move integer micro-units.
CREATE SCHEMA IF NOT EXISTS online_ads;

-- One row per campaign: the latest state the Ad Manager folded from campaign-instructions.
CREATE TABLE online_ads.ads (
    campaign_id          text PRIMARY KEY,
    -- Offset-derived, monotonic per campaign: replays of the same instruction give the same version.
    version              bigint       NOT NULL,
    status               text         NOT NULL CHECK (status IN ('Active', 'Inactive')),
    action               text         NOT NULL,
    text                 text         NOT NULL,
    category             text         NOT NULL,
    keywords             text         NOT NULL,
    target_gender        text         NOT NULL,
    target_age_start     integer      NOT NULL,
    target_age_end       integer      NOT NULL,
    target_city          text         NOT NULL,
    target_state         text         NOT NULL,
    target_country       text         NOT NULL,
    target_income_bucket text         NOT NULL,
    target_device        text         NOT NULL,
    cpc                  numeric(20, 6)  NOT NULL,
    cpa                  numeric(20, 6)  NOT NULL,
    cpm                  numeric(24, 10) NOT NULL,
    budget               numeric(20, 6)  NOT NULL CHECK (budget > 0),
    slot_budget          numeric(20, 6)  NOT NULL,
    flight_start         timestamptz  NOT NULL,
    flight_end           timestamptz  NOT NULL,
    -- Spend as booked by the spend ledger (exactly once from ad-feedback).
    spent                numeric(20, 6)  NOT NULL DEFAULT 0,
    remaining_budget     numeric(20, 6)  GENERATED ALWAYS AS (budget - spent) STORED,
    updated_at           timestamptz  NOT NULL DEFAULT now(),
    CHECK (flight_end > flight_start)
);
CREATE INDEX ads_status_idx ON online_ads.ads (status);

-- Every ad served, copied in batches from the served-ads topic.
CREATE TABLE online_ads.served_ads (
    request_id       text PRIMARY KEY,
    campaign_id      text         NOT NULL,
    user_id          text         NOT NULL,
    served_at        timestamptz  NOT NULL,
    auction_cpm      numeric(24, 10) NOT NULL,
    auction_cpc      numeric(20, 6)  NOT NULL,
    auction_cpa      numeric(20, 6)  NOT NULL,
    bidders          integer      NOT NULL,
    device_type      text,
    city             text,
    state            text,
    country          text,
    age              integer,
    gender           text,
    income_bucket    text
);
CREATE INDEX served_ads_campaign_idx ON online_ads.served_ads (campaign_id);
CREATE INDEX served_ads_time_idx ON online_ads.served_ads (served_at);

-- User profiles (the original platform's user table).
CREATE TABLE online_ads."user" (
    user_id        text PRIMARY KEY,
    name           text        NOT NULL,
    age            integer     NOT NULL,
    gender         text        NOT NULL,
    income_bucket  text        NOT NULL,
    device_type    text        NOT NULL,
    city           text        NOT NULL,
    state          text        NOT NULL,
    country        text        NOT NULL,
    email          text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- Consumed offsets of transactional sinks, stored in the same transaction as what they wrote.
CREATE TABLE online_ads.consumer_offsets (
    consumer_group text    NOT NULL,
    topic          text    NOT NULL,
    partition      integer NOT NULL,
    next_offset    bigint  NOT NULL,
    PRIMARY KEY (consumer_group, topic, partition)
);
