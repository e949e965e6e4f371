-- normalize_name over fixed cases; returns the cases whose output differs from the
-- expected one.
with

cases (input, expected) as (

    values
        ('José Pérez', 'jose perez'),
        ('  MARÍA   de los ÁNGELES  ', 'maria de los angeles'),
        ('Ñuñez Ñandú', 'nunez nandu'),
        ('O''Brien', 'obrien'),
        ('D’Angelo', 'dangelo'),
        ('Ana-María', 'ana maria'),
        ('Pérez, Juan C.', 'perez juan c'),
        ('juan2 perez', 'juan perez'),
        ('Zoë Çelik Müller', 'zoe celik muller'),
        ('Łukasz Wałęsa', 'lukasz walesa'),
        ('Ștefan Țiriac', 'stefan tiriac'),
        ('Strauß', 'strauss'),
        ('François Œuvre', 'francois oeuvre'),
        ('ÆSIR', 'aesir'),
        ('Núñez D’Ávila', 'nunez davila'),
        ('Mc`Donald', 'mcdonald'),
        (E'Ana\tLuz\nRojas', 'ana luz rojas'),
        ('123', null),
        ('--', null),
        ('', null),
        ('   ', null),
        (null, null)

)

select
    input,
    expected,
    {{ normalize_name('input') }} as actual
from cases
where {{ normalize_name('input') }} is distinct from expected
