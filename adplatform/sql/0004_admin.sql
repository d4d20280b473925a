-- The admin service: API keys (only their SHA-256 is stored), the audit trail of every write made through
-- the API, and the replays of dead-lettered instructions (one per DLQ record, so a replay is idempotent).
CREATE TABLE online_ads.api_keys (
    name        text PRIMARY KEY,
    -- The public part of the key (adp_<key_id>.<secret>): finds the row; the hash is compared in constant time.
    key_id      text        NOT NULL UNIQUE,
    key_sha256  bytea       NOT NULL,
    role        text        NOT NULL CHECK (role IN ('read', 'write', 'admin')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE TABLE online_ads.audit (
    id           bigserial PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    author       text        NOT NULL,
    action       text        NOT NULL CHECK (action IN ('create', 'update', 'stop', 'replay')),
    campaign_id  text        NOT NULL,
    -- Where the instruction went in campaign-instructions; the campaign's version becomes offset + 1.
    partition    integer     NOT NULL,
    "offset"     bigint      NOT NULL,
    -- The instruction as published (the 17 strings), so a PATCH right after a write merges onto it.
    instruction  jsonb       NOT NULL
);
CREATE INDEX audit_campaign_idx ON online_ads.audit (campaign_id, id);

CREATE TABLE online_ads.dlq_replays (
    dlq_partition  integer     NOT NULL,
    dlq_offset     bigint      NOT NULL,
    partition      integer     NOT NULL,
    "offset"       bigint      NOT NULL,
    author         text        NOT NULL,
    at             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dlq_partition, dlq_offset)
);
