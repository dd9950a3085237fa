-- A webhook's target URL may carry a receiver's credential (?token=..., issue 13): it is kept sealed with
-- BUILDSTATE_WEBHOOK_KEY, like the signing secret, and `url` holds only what answers show (credential-shaped
-- query values masked). Rows made before this migration have no sealed URL and are sent to `url` as it is.
ALTER TABLE webhooks ADD COLUMN url_sealed TEXT;
