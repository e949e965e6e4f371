-- normalize_document over fixed cases; returns the cases whose output differs from the
-- expected one.
with

cases (input, expected) as (

    values
        ('45678912', '45678912'),
        ('45.678.912', '45678912'),
        ('4567-8912-3', '456789123'),
        (' q45678912 ', 'Q45678912'),
        ('ab-123456', 'AB123456'),
        ('AB 123 456 C', 'AB123456C'),
        ('001234567', '001234567'),
        ('00000000', null),
        ('0000-0000', null),
        ('AAAAAAAA1', 'AAAAAAAA1'),
        ('XXXXXXXX', null),
        ('12345678', null),
        ('0123456789', null),
        ('SIN DATO', null),
        ('sin dato', null),
        ('N/A', null),
        ('NA', null),
        ('S/N', null),
        ('SN', null),
        ('NULL', null),
        ('NONE', null),
        ('PENDIENTE', null),
        ('-', null),
        ('12345', null),
        ('A-1234', null),
        ('', null),
        ('   ', null),
        (null, null)

)

select
    input,
    expected,
    {{ normalize_document('input') }} as actual
from cases
where {{ normalize_document('input') }} is distinct from expected
