{#- Person name for comparison: Latin letters with diacritics folded to ASCII (á -> a,
    ñ -> n, ç -> c, ß -> ss, æ -> ae ...), apostrophes dropped (O'Brien -> obrien), every
    other non-letter (digits, punctuation, whitespace) a single space, lower-cased, trimmed;
    null when no letter is left. translate() over a fixed list instead of unaccent, so it
    works on any Postgres without extensions.
    translate() costs a scan of its whole list per input character, so the long list only
    sees the rare names that need it: pure-ASCII names skip folding, names whose only
    non-ASCII letters are Spanish ones (á é í ó ú ü ñ) use a 14-character list. -#}
{% macro normalize_name(col) -%}
    {{ return(adapter.dispatch('normalize_name')(col)) }}
{%- endmacro %}

{% macro default__normalize_name(col) -%}
    {%- set spanish = 'áéíóúüñÁÉÍÓÚÜÑ' -%}
    {%- set spanish_ascii = 'aeiouunAEIOUUN' -%}
    {%- set accented = 'ÀÁÂÃÄÅÇÈÉÊËÌÍÎÏÐÑÒÓÔÕÖØÙÚÛÜÝàáâãäåçèéêëìíîïðñòóôõöøùúûüýÿ'
        ~ 'ĀāĂăĄąĆćĈĉĊċČčĎďĐđĒēĔĕĖėĘęĚěĜĝĞğĠġĢģĤĥĦħĨĩĪīĬĭĮįİıĴĵĶķĹĺĻļĽľĿŀŁł'
        ~ 'ŃńŅņŇňŌōŎŏŐőŔŕŖŗŘřŚśŜŝŞşŠšŢţŤťŦŧŨũŪūŬŭŮůŰűŲųŴŵŶŷŸŹźŻżŽžȘșȚț' -%}
    {%- set accented_ascii = 'AAAAAACEEEEIIIIDNOOOOOOUUUUYaaaaaaceeeeiiiidnoooooouuuuyy'
        ~ 'AaAaAaCcCcCcCcDdDdEeEeEeEeEeGgGgGgGgHhHhIiIiIiIiIiJjKkLlLlLlLlLl'
        ~ 'NnNnNnOoOoOoRrRrRrSsSsSsSsTtTtTtUuUuUuUuUuUuWwYyYZzZzZzSsTt' -%}
    {#- typographic apostrophes: at the end of the list without a counterpart, so deleted -#}
    {%- set apostrophes = '´‘’ʼ' -%}
    {%- if accented | length != accented_ascii | length or spanish | length != spanish_ascii | length -%}
        {{ exceptions.raise_compiler_error("normalize_name: transliteration lists differ in length") }}
    {%- endif -%}
    nullif(
        btrim(
            regexp_replace(
                lower(
                    replace(
                        replace(
                            case
                                when octet_length({{ col }}) = char_length({{ col }}) then {{ col }}
                                when ({{ col }}) !~ '[^[:ascii:]{{ spanish }}]'
                                    then translate({{ col }}, '{{ spanish }}', '{{ spanish_ascii }}')
                                else translate(
                                    replace(replace(replace(replace(replace(
                                        {#- compose decomposed accents (e + U+0301 -> é), drop marks left over #}
                                        regexp_replace(normalize({{ col }}, NFC), '[\u0300-\u036f]', '', 'g'),
                                        'ß', 'ss'), 'Æ', 'AE'), 'æ', 'ae'), 'Œ', 'OE'), 'œ', 'oe'),
                                    '{{ accented }}{{ apostrophes }}',
                                    '{{ accented_ascii }}'
                                )
                            end,
                            '''', ''
                        ),
                        '`', ''
                    )
                ),
                '[^a-z]+', ' ', 'g'
            )
        ),
        ''
    )
{%- endmacro %}
