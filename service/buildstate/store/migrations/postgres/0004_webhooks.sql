-- Webhook subscriptions and their outbox. A delivery row is queued in the same transaction as the event
-- it announces (see the event append in store/postgres.py), so no committed event can miss its webhook.
CREATE TABLE webhooks (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    url text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('json', 'cdevents', 'concourse')),
    -- Filters, NULL = any. Lists are stored as ",a,b," so one LIKE works on both stores.
    platform text,
    os_version text,
    image_type text,
    states text,
    event_types text,
    secret_encrypted text NOT NULL,
    enabled boolean NOT NULL DEFAULT true,
    disabled_reason text,
    consecutive_failures integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    created_by text NOT NULL
);

CREATE TABLE webhook_deliveries (
    id bigserial PRIMARY KEY,
    webhook_id bigint NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_seq bigint NOT NULL REFERENCES events (seq),
    message_id text NOT NULL,
    status text NOT NULL CHECK (status IN ('pending', 'delivering', 'delivered', 'dead')),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    lease_until timestamptz,
    last_status_code integer,
    last_error text,
    last_duration_ms integer,
    created_at timestamptz NOT NULL,
    delivered_at timestamptz,
    UNIQUE (webhook_id, event_seq)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status IN ('pending', 'delivering');
CREATE INDEX webhook_deliveries_hook ON webhook_deliveries (webhook_id, id DESC);

CREATE TABLE webhook_attempts (
    id bigserial PRIMARY KEY,
    delivery_id bigint NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt integer NOT NULL,
    at timestamptz NOT NULL,
    status_code integer,
    duration_ms integer,
    error text
);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, attempt);
