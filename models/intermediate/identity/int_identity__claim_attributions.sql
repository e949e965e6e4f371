{{ config(materialized='view') }}
-- Which driver the platform's claims name each lead for: one row per lead id that claims name
-- (claims.lead_id), with the one driver they name it for. The platform pays the park for that
-- driver on the strength of that lead, so it is evidence that the lead is that driver: the
-- lead's record carries the driver's id (`claim_driver_id`), a blocking key pairs it with the
-- driver's record, and the matcher's `claim` field scores the agreement (matcher/defaults.toml).
--
-- Claims whose status is in `claim_attribution_excluded_statuses` (default: rejected) do not
-- count. A lead that counted claims name for two different drivers is left out: the platform
-- contradicts itself, and neither driver is taken.
--
-- A view, to read and test: int_identity__records works out the same select itself
-- (macros/claim_attribution.sql), once per query, joins it to the lead tables named in
-- `claim_lead_tables`, and counts a lead whose attribution appears, changes or goes as a
-- changed record.

{{ claim_attributions_select() }}
