-- Identifier values held by too many distinct records (a dispatcher's phone, a park's email):
-- they never block and never link on their own.

with records as (
    select * from {{ ref('int_identity__records') }}
),

identifiers as (
    select 'phone'::text as identifier_type, phone as identifier_value, record_uid from records where phone is not null
    union all
    select 'document', document_number, record_uid from records where document_number is not null
    union all
    select 'email', email, record_uid from records where email is not null
    union all
    select 'plate', plate, record_uid from records where plate is not null
),

counted as (
    select
        identifier_type,
        identifier_value,
        count(distinct record_uid)::integer as record_count
    from identifiers
    group by identifier_type, identifier_value
    having count(distinct record_uid) > {{ var('shared_identifier_max_records') }}
)

select * from counted
