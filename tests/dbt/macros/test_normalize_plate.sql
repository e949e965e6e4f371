-- normalize_plate over fixed cases; returns the cases whose output differs from the
-- expected one.
with

cases (input, expected) as (

    values
        ('ABC-123', 'ABC123'),
        ('abc 123', 'ABC123'),
        (' a1b-234 ', 'A1B234'),
        ('B2C.345', 'B2C345'),
        ('AB-C12', 'ABC12'),
        ('ab-12', null),
        ('SIN PLACA', null),
        ('EN TRAMITE', null),
        ('N/A', null),
        ('000000', null),
        ('XXX-XXX', null),
        ('1111-11', null),
        ('123456', null),
        ('-', null),
        ('', null),
        ('   ', null),
        (null, null)

)

select
    input,
    expected,
    {{ normalize_plate('input') }} as actual
from cases
where {{ normalize_plate('input') }} is distinct from expected
