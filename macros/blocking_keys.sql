{#- The blocking keys of records, as one select of (record_uid, key_type, key_value,
    name_signature). int_identity__blocking_keys stores them hashed; identity_candidates builds
    them again for the few records rewritten in an incremental run, to look their blocks up.
    Keys: exact identifiers; the driver a claim names a lead for (`claim`: a driver's own id on
    the driver's record, int_identity__claim_attributions); one-deletion keys of phone, document and plate (a single substitution,
    transposition, insertion or deletion still meets its twin; only for identifiers of at most
    `max_fuzzy_identifier_length` characters); unordered pairs of name tokens (robust to swapped
    order, a missing second surname, one typo in a name of three or more tokens), from the first
    `max_name_key_tokens` tokens, and unordered triples from the first `max_name_triple_tokens`.
    One-deletion keys carry their record's name signature and a deletion tag (fuzzy_names_compatible). -#}
{#- name particles left out of name keys -#}
{% macro name_particles() -%}
    {{ return(['de', 'del', 'la', 'las', 'los', 'y', 'da', 'das', 'do', 'dos', 'van', 'von', 'di']) }}
{%- endmacro %}

{#- A one-deletion key's `name_signature` carries two things: its record's name signature in
    the low `signature_bits()` bits (one bit per name token, by hash; 0 without a name), and in
    the bits above, a deletion tag: which position was deleted and the character there (0 for
    the whole document, position 0). -#}
{% macro signature_bits() -%}52{%- endmacro %}

{#- the tag of deleting character `position` of `value` (ASCII: identifiers are normalized to
    A-Z and 0-9), in the bits above the name signature -#}
{% macro deletion_tag(value, position) -%}
    (({{ position }} * 128 + ascii(substr({{ value }}, {{ position }}, 1)))::bigint << {{ signature_bits() }})
{%- endmacro %}

{#- Whether two records' one-deletion key is worth a pair, from their key signatures:
    - their deletion tags differ. Two values that become the same key by deleting the same
      character at the same place are the same value, and their exact key (never over its
      bound: a value held by more than `shared_identifier_max_records` records is not a key)
      already pairs them; at 1M leads an equal phone otherwise yields its pair nine times
      more, one per deletion, ~9M duplicate pairs built and then merged away;
    - and the names can agree: they share a token (or two tokens share a bit: about one pair
      in seven of the rest), or one record has no name. A one-edit identifier links only with
      agreeing names (phone_close_name, document_close_name), and agreeing names share a
      token but in the rarest of typo sets; random one-edit neighbours (at 1M records every
      8-digit number has several) mostly share none. -#}
{% macro fuzzy_names_compatible(left_signature, right_signature) -%}
    {%- set names = '((1::bigint << ' ~ signature_bits() ~ ') - 1)' -%}
    ((coalesce({{ left_signature }}, 0) # coalesce({{ right_signature }}, 0)) >> {{ signature_bits() }} <> 0
        and (coalesce({{ left_signature }}, 0) & {{ names }} = 0
            or coalesce({{ right_signature }}, 0) & {{ names }} = 0
            or coalesce({{ left_signature }}, 0) & coalesce({{ right_signature }}, 0) & {{ names }} <> 0))
{%- endmacro %}

{#- A record's name keys, as one select of (name_tokens, name_signature) over `name_sorted`, for
    a lateral join (int_identity__records_usable):
    - name_tokens: the tokens of `name_sorted` without particles and one-letter initials, in
      byte order (name_sorted is already), the first `max_name_key_tokens`; a repeated token
      stays (the double surname of "ivan garcia garcia" is part of who he is). Empty for a
      record without a name.
    - name_signature: one bit per distinct token among those (hash mod signature_bits(), the
      bits below a one-deletion key's deletion tag); null without tokens.
    Both come out of one aggregate over one pass of the tokens: the signature computed from the
    tokens' array afterwards split or duplicated the work (an `offset 0` sub-select to hold the
    array, or the array worked out twice); this way the records' full build at 1M leads takes
    6.8 s instead of 8.5 s, the same rows (docs/benchmark.md, round 20). -#}
{% macro name_keys(name_sorted) -%}
    select
        coalesce(array_agg(tokens.name_token order by tokens.name_token), '{}') as name_tokens,
        bit_or(1::bigint << ((hashtextextended(tokens.name_token, 0) & 2147483647) % {{ signature_bits() }})::integer)
            as name_signature
    from (
        select name_token collate "C" as name_token
        from unnest(string_to_array({{ name_sorted }}, ' ')) as token_list (name_token)
        where length(name_token) > 1
            and name_token not in ('{{ name_particles() | join("', '") }}')
        order by 1
        limit {{ var('max_name_key_tokens', 8) }}
    ) as tokens
{%- endmacro %}

{#- True for the first of a run of equal tokens at `position` (positions from `lowest`): the
    tokens are sorted, so keeping only such positions gives every distinct pair or triple of
    token values once, a repeated token included ("garcia garcia ivan" -> "garcia garcia",
    "garcia ivan"), without a distinct over millions of keys. -#}
{% macro _first_of_run(tokens, position, lowest) -%}
    ({{ position }} = {{ lowest }} or {{ tokens }}[{{ position }} - 1] <> {{ tokens }}[{{ position }}])
{%- endmacro %}

{#- The keys of the rows of `relation` (record_uid, phone, document_number, email, plate,
    claim_driver_id, name_tokens, name_signature) that satisfy `condition`, as one union-all select of
    (record_uid, key_type, key_value, name_signature). Every branch reads `relation` itself
    and nothing is shared through a CTE or a sub-select, so a full build runs it on every core
    (a CTE scan or a correlated sub-select would keep the whole query on one). Each key of a
    record comes out once: one deletion position per run of equal characters (deleting either of
    two equal neighbours gives the same string), one position per run of equal name tokens. -#}
{% macro blocking_key_rows(relation, condition='true') -%}
{%- set max_fuzzy = var('max_fuzzy_identifier_length', 20) %}
{%- if max_fuzzy | int > 31 -%}
    {{ exceptions.raise_compiler_error('max_fuzzy_identifier_length is ' ~ max_fuzzy ~ ': at most 31 (a one-deletion key tags the deleted position in 5 bits)') }}
{%- endif %}
{%- set max_triple_tokens = var('max_name_triple_tokens', 6) %}
{%- set tokens = 'records.name_tokens' %}
{%- set token_count = 'coalesce(cardinality(records.name_tokens), 0)' %}
{%- set triple_count = 'least(coalesce(cardinality(records.name_tokens), 0), ' ~ max_triple_tokens ~ ')' %}
{%- for type, column, prefix in [('phone', 'phone', 'p:'), ('document', 'document_number', 'd:'), ('email', 'email', 'e:'), ('plate', 'plate', 't:'), ('claim', 'claim_driver_id', 'c:')] %}
select records.record_uid, {{ blocking_key_code(type) }} as key_type, '{{ prefix }}' || records.{{ column }} as key_value,
    null::bigint as name_signature
from {{ relation }} as records
where ({{ condition }}) and records.{{ column }} is not null
union all
{%- endfor %}
-- one deletion of phones and plates (a misread or mistyped plate character, "ABC123" /
-- "A8C123", is the commonest plate error in lead forms and scans)
{%- for type, column, prefix in [('phone_fuzzy', 'phone', 'pf:'), ('plate_fuzzy', 'plate', 'tf:')] %}
select records.record_uid, {{ blocking_key_code(type) }},
    '{{ prefix }}' || left(records.{{ column }}, position - 1) || substr(records.{{ column }}, position + 1),
    coalesce(records.name_signature, 0) | {{ deletion_tag('records.' ~ column, 'position') }}
from {{ relation }} as records
cross join lateral generate_series(1, length(records.{{ column }})) as position
where ({{ condition }}) and records.{{ column }} is not null
    and length(records.{{ column }}) <= {{ max_fuzzy }}
    and substr(records.{{ column }}, position, 1) is distinct from nullif(substr(records.{{ column }}, position + 1, 1), '')
union all
{%- endfor %}
-- position 0 is the whole value: "Q12345678" minus its "Q" meets "12345678" itself
select records.record_uid, {{ blocking_key_code('document_fuzzy') }},
    'df:' || case when position = 0 then records.document_number
        else left(records.document_number, position - 1) || substr(records.document_number, position + 1) end,
    coalesce(records.name_signature, 0)
        | case when position = 0 then 0 else {{ deletion_tag('records.document_number', 'position') }} end
from {{ relation }} as records
cross join lateral generate_series(0, length(records.document_number)) as position
where ({{ condition }}) and records.document_number is not null
    and length(records.document_number) <= {{ max_fuzzy }}
    and (position = 0 or substr(records.document_number, position, 1)
        is distinct from nullif(substr(records.document_number, position + 1, 1), ''))
union all
select records.record_uid, {{ blocking_key_code('name_pair') }},
    'np:' || {{ tokens }}[i] || ' ' || {{ tokens }}[j], null::bigint
from {{ relation }} as records
cross join lateral generate_series(1, {{ token_count }}) as i
cross join lateral generate_series(i + 1, {{ token_count }}) as j
where ({{ condition }})
    and {{ _first_of_run(tokens, 'i', '1') }} and {{ _first_of_run(tokens, 'j', 'i + 1') }}
union all
-- every three tokens of a name of 3+ tokens (of its first {{ max_triple_tokens }}): far rarer
-- than a pair, so it still blocks where a common pair ("jose quispe") exceeds its bound,
-- and a 4-token name keeps a key through one typo, a dropped second given name or surname
select records.record_uid, {{ blocking_key_code('name_triple') }},
    'nt:' || {{ tokens }}[i] || ' ' || {{ tokens }}[j] || ' ' || {{ tokens }}[k], null::bigint
from {{ relation }} as records
cross join lateral generate_series(1, {{ triple_count }}) as i
cross join lateral generate_series(i + 1, {{ triple_count }}) as j
cross join lateral generate_series(j + 1, {{ triple_count }}) as k
where ({{ condition }})
    and {{ _first_of_run(tokens, 'i', '1') }} and {{ _first_of_run(tokens, 'j', 'i + 1') }}
    and {{ _first_of_run(tokens, 'k', 'j + 1') }}
{%- endmacro %}

{#- `count` conditions on `column` (a bigint key hash) that split the whole bigint range into
    that many equal, contiguous ranges: every value satisfies exactly one. identity_candidates'
    full build reads the blocks of each range as a branch of one union all, which Postgres runs
    as a Parallel Append, one branch per process: a block is all the keys of one hash, so no
    block straddles two ranges. -#}
{% macro key_hash_ranges(column, count) -%}
    {%- set n = count | int -%}
    {%- if n < 1 or (count | string) != (n | string) -%}
        {{ exceptions.raise_compiler_error("candidates_full_build_ranges is '" ~ count ~ "': a whole number of at least 1") }}
    {%- endif -%}
    {%- set low = -9223372036854775808 -%}
    {%- set width = 18446744073709551616 -%}
    {%- set conditions = [] -%}
    {%- for k in range(n) -%}
        {%- set parts = [] -%}
        {%- if k > 0 %}{% do parts.append(column ~ ' >= ' ~ (low + (width * k) // n)) %}{% endif -%}
        {%- if k < n - 1 %}{% do parts.append(column ~ ' < ' ~ (low + (width * (k + 1)) // n)) %}{% endif -%}
        {%- do conditions.append(parts | join(' and ') if parts else 'true') -%}
    {%- endfor -%}
    {{ return(conditions) }}
{%- endmacro %}

{#- Every position pair of a block of n records, as rows (n, i, j) with 1 <= i < j <= n <= max_size:
    identity_candidates' full build joins each block to the rows of its size by a hash join,
    instead of two nested generate_series per block. At 1M leads (9.1M blocks, 13.6M pairs) the
    nested series start 25M function scans, all in one process above the sort's Gather Merge
    (39 s); the join probes a hash table of 10,660 rows once per block (15 s). The rows come from
    one series over the n x i x j grid, so the planner, which takes a series over a column as
    1000 rows, sees a small relation and hashes it (a series per level would be estimated at
    10^9 rows, and the blocks hashed instead). The grid has max_size^3 rows: above a bound of
    200 (8M grid rows) the positions come from nested series instead, the same rows. -#}
{% macro block_pair_positions(max_size) -%}
{%- set size = max_size | int -%}
{%- if size <= 200 -%}
select n, i, j
from (
    select
        position / {{ size * size }} + 1 as n,
        position / {{ size }} % {{ size }} + 1 as i,
        position % {{ size }} + 1 as j
    from generate_series(0, {{ size * size * size - 1 }}) as position
) as grid
where i < j and j <= n
{%- else -%}
select n, i, j
from generate_series(2, {{ size }}) as n
cross join lateral generate_series(1, n - 1) as i
cross join lateral generate_series(i + 1, n) as j
{%- endif %}
{%- endmacro %}
