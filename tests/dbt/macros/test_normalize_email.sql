-- normalize_email over fixed cases; returns the cases whose output differs from the
-- expected one.
with

cases (input, expected) as (

    values
        ('ana.rojas@example.com', 'ana.rojas@example.com'),
        ('Ana.Rojas@Example.COM', 'ana.rojas@example.com'),
        ('  ana@example.org  ', 'ana@example.org'),
        (E'\tana@example.org\n', 'ana@example.org'),
        ('user+tag@mail.example.pe', 'user+tag@mail.example.pe'),
        ('o''neil@example.com', 'o''neil@example.com'),
        ('first_last-1@sub-domain.example.co', 'first_last-1@sub-domain.example.co'),
        ('no-at-sign.example.com', null),
        ('two@@example.com', null),
        ('a@b@example.com', null),
        ('@example.com', null),
        ('user@example', null),
        ('user@example.c', null),
        ('user@example.123', null),
        ('user name@example.com', null),
        ('user@exa mple.com', null),
        ('user@.example.com', null),
        ('user@example..com', null),
        ('user@-example.com', null),
        ('user@example.com.', null),
        ('a@example.com; b@example.com', null),
        ('', null),
        ('   ', null),
        (null, null)

)

select
    input,
    expected,
    {{ normalize_email('input') }} as actual
from cases
where {{ normalize_email('input') }} is distinct from expected
