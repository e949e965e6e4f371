-- phone_invalid_reason over fixed cases (project default vars); returns the cases whose
-- reason differs from the expected one, and any case where normalize_phone kept a phone
-- that has a reason (the two macros must agree).
with

cases (input, expected) as (

    values
        ('+51 987 654 321', null),
        ('0051987654321', null),
        ('987-654-321', null),
        ('51 0987654321', null),
        (E'\t987654321\n', null),
        (E' \t ', null),
        ('(01) 456-7890', 'not_mobile'),
        ('044-123456', 'not_mobile'),
        ('812345678', 'not_mobile'),
        ('+1 415 555 0100', 'not_mobile'),
        ('98765432', 'too_short'),
        ('0051 98765432', 'too_short'),
        ('1234', 'too_short'),
        ('0051', 'too_short'),
        ('9876543210', 'too_long'),
        ('5198765432', 'too_long'),
        ('987654321 / 912345678', 'too_long'),
        ('999999999', 'placeholder'),
        ('+51 999 999 999', 'placeholder'),
        ('000000000', 'placeholder'),
        ('00000', 'placeholder'),
        ('123456789', 'placeholder'),
        ('n/a', 'no_digits'),
        ('sin numero', 'no_digits'),
        ('-', 'no_digits'),
        ('', null),
        ('   ', null),
        (null, null)

)

select
    input,
    expected,
    {{ phone_invalid_reason('input') }} as actual,
    {{ normalize_phone('input') }} as normalized
from cases
where
    {{ phone_invalid_reason('input') }} is distinct from expected
    or ({{ normalize_phone('input') }} is not null and {{ phone_invalid_reason('input') }} is not null)
