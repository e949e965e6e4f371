-- name_sorted_tokens over fixed cases (inputs are normalize_name output, plus stray
-- whitespace); returns the cases whose output differs from the expected one.
with

cases (input, expected) as (

    values
        ('juan perez', 'juan perez'),
        ('perez juan', 'juan perez'),
        ('rojas ana luz', 'ana luz rojas'),
        ('z y x w', 'w x y z'),
        ('anabel ana', 'ana anabel'),
        ('b a b', 'a b b'),
        ('maria  ana', 'ana maria'),
        ('  zoe  ', 'zoe'),
        (E'luz\trojas\nana', 'ana luz rojas'),
        ('', null),
        ('   ', null),
        (null, null)

)

select
    input,
    expected,
    {{ name_sorted_tokens('input') }} as actual
from cases
where {{ name_sorted_tokens('input') }} is distinct from expected
