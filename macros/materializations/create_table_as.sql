{#- A contracted table is built by create-table-as, then given its constraints.

    dbt-postgres builds a table whose contract is enforced in two statements: `create table`
    with the contract's columns and constraints, then `insert into ... select`. Postgres never
    runs the select of an INSERT in parallel; it does run a create-table-as's select on every
    core it may. identity_candidates' full build (the only contracted table here) is a query of
    tens of seconds at 1M leads that splits its work into ranges for that (its header says how):
    as an insert it ran on one core. So, where every column constraint of the contract is
    `not null` (which any table's column can be given afterwards), the table is made by
    `create table ... as` the contract's columns in the contract's order, and then one `alter
    table` sets the columns not null and adds the model's constraints (a check, a unique, ...):
    Postgres checks them all in one scan of the new rows and fails the build, as the insert
    would have, when a row breaks one. The columns' types are the select's, which dbt has just
    asserted equal to the contract's (get_assert_columns_equivalent, as the insert path does).
    Anything else (a temporary table, no enforced contract, a column constraint other than
    `not null`) is built as dbt would (its default here calls dbt-postgres's create_table_as).
    This overrides get_create_table_as_sql, which the table and incremental materializations
    call, not create_table_as itself: the adapter's macro stays reachable for the rest. -#}
{% macro postgres__get_create_table_as_sql(temporary, relation, sql) -%}
    {%- set contract_config = config.get('contract') -%}
    {%- if temporary or not (contract_config and contract_config.enforced) or not contract_columns_only_not_null() -%}
        {{ return(default__get_create_table_as_sql(temporary, relation, sql)) }}
    {%- endif -%}
    {%- set sql_header = config.get('sql_header', none) -%}
    {{ sql_header if sql_header is not none }}
    {{ get_assert_columns_equivalent(sql) }}
    create {% if config.get('unlogged', default=false) %}unlogged {% endif %}table {{ relation }} as (
        {{ get_select_subquery(sql) }}
    );
    {%- set alterations = [] -%}
    {%- for column in model['columns'].values() -%}
        {%- if column.get('constraints') -%}
            {%- do alterations.append('alter column ' ~ (adapter.quote(column['name']) if column.get('quote') else column['name']) ~ ' set not null') -%}
        {%- endif -%}
    {%- endfor -%}
    {%- for constraint in adapter.render_raw_model_constraints(raw_constraints=model['constraints']) -%}
        {%- do alterations.append('add ' ~ constraint) -%}
    {%- endfor -%}
    {%- if alterations %}
    alter table {{ relation }}
        {{ alterations | join(',\n        ') }};
    {%- endif %}
{%- endmacro %}

{#- whether every constraint on a column of the model's contract is `not null` -#}
{% macro contract_columns_only_not_null() -%}
    {%- for column in model['columns'].values() -%}
        {%- for constraint in column.get('constraints') or [] -%}
            {%- if constraint.get('type') != 'not_null' -%}
                {{ return(false) }}
            {%- endif -%}
        {%- endfor -%}
    {%- endfor -%}
    {{ return(true) }}
{%- endmacro %}
