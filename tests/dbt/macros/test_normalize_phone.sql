-- normalize_phone over fixed cases (project default vars: country code 51, 9-digit
-- mobiles starting with 9); returns the cases whose output differs from the expected one.
with

cases (input, expected) as (

    values
        ('+51 987 654 321', '987654321'),
        ('0051987654321', '987654321'),
        ('51987654321', '987654321'),
        ('987-654-321', '987654321'),
        ('(+51) 987.654.321', '987654321'),
        ('+51 (0) 987 654 321', '987654321'),
        ('0987654321', '987654321'),
        ('51 0987654321', '987654321'),
        ('987654321.0', '987654321'),
        ('  912 345 678  ', '912345678'),
        ('tel: 912345678', '912345678'),
        ('(01) 456-7890', null),
        ('044-123456', null),
        ('98765432', null),
        ('9876543210', null),
        ('5198765432', null),
        ('0051 98765432', null),
        ('987654321 / 912345678', null),
        ('+1 415 555 0100', null),
        ('812345678', null),
        ('999999999', null),
        ('+51 999 999 999', null),
        ('000000000', null),
        ('123456789', null),
        ('n/a', null),
        ('', null),
        ('   ', null),
        (null, null)

)

select
    input,
    expected,
    {{ normalize_phone('input') }} as actual
from cases
where {{ normalize_phone('input') }} is distinct from expected
