{#- Views are re-created only when what they are made of changed.

    dbt's own view materialization re-creates every view on every run: create a temporary
    view, rename the live one away, rename the new one in, comment on the view and on each of
    its columns (persist_docs), drop the old one. The scheduled job runs every hour and its
    views (staging, the identity views, the ops KPIs) only change when the project does, so
    that is a few hundred DDL statements an hour for nothing, and every rename takes an
    ACCESS EXCLUSIVE lock on a view the ops dashboards read: a dashboard query that is slow
    makes the rename wait, and every reader behind the rename waits with it.

    This materialization keeps a signature of each view it built (an md5 of the compiled SQL,
    the descriptions persist_docs writes, the grants and contract config, and this macro's
    version) in `intermediate.identity_view_state`. When the view exists in the database as a
    view and its stored signature is the one it would be built with now, the run leaves it as
    it is (the model's result message reads `UNCHANGED`). Otherwise, and always under
    `--full-refresh`, dbt's default view materialization builds it, and the signature is
    stored once that has committed: a run that dies in between re-creates the view next time.
    The view's existence is asked of the catalog, not of dbt's relation cache, so a view
    dropped underneath (by `drop ... cascade` of something it reads) is built again. -#}

{% macro view_state_relation() -%}
    {{ adapter.quote(generate_schema_name('intermediate', none) | trim) }}.identity_view_state
{%- endmacro %}

{#- on-run-start (after create_load_state, which makes sure the schema exists) -#}
{% macro create_view_state() -%}
    create table if not exists {{ view_state_relation() }} (
        view_relation text primary key,
        signature text not null,
        built_at timestamptz not null default now()
    )
{%- endmacro %}

{#- what the view is made of; bump the version when this materialization changes what it builds -#}
{% macro view_signature(compiled_sql) -%}
    {%- set parts = [
        'view-materialization-v1',
        compiled_sql,
        model.get('description') or '',
        tojson(model.get('columns') or {}, sort_keys=true),
        tojson(config.get('persist_docs') or {}, sort_keys=true),
        tojson(config.get('grants') or {}, sort_keys=true),
        tojson(model.get('contract') or {}, sort_keys=true),
    ] -%}
    {{- return(local_md5(parts | join('\n--\n'))) -}}
{%- endmacro %}

{#- whether `relation` exists as a view whose stored signature is `signature` -#}
{% macro view_is_current(relation, signature) -%}
    {%- set name = relation.render() -%}
    {%- call statement('view_state', fetch_result=True) -%}
        select count(*)
        from {{ view_state_relation() }} as state
        join pg_class as class on class.oid = to_regclass(state.view_relation)
        where state.view_relation = {{ dbt.string_literal(name) }}
            and state.signature = {{ dbt.string_literal(signature) }}
            and class.relkind = 'v'
    {%- endcall -%}
    {{- return(load_result('view_state').table.rows[0][0] == 1) -}}
{%- endmacro %}

{%- materialization view, adapter='postgres' -%}
    {%- set target_relation = this.incorporate(type='view') -%}
    {%- set signature = view_signature(sql) -%}

    {%- if not should_full_refresh() and view_is_current(target_relation, signature) -%}
        {{ run_hooks(pre_hooks, inside_transaction=False) }}
        {{ run_hooks(pre_hooks, inside_transaction=True) }}
        {%- do store_raw_result(name='main', message='UNCHANGED', code='UNCHANGED', rows_affected=0) -%}
        {{ run_hooks(post_hooks, inside_transaction=True) }}
        {{ adapter.commit() }}
        {{ run_hooks(post_hooks, inside_transaction=False) }}
        {{ return({'relations': [target_relation]}) }}
    {%- endif -%}

    {%- set built = dbt.materialization_view_default() -%}
    {%- call statement('record_view_state') -%}
        insert into {{ view_state_relation() }} (view_relation, signature, built_at)
        values ({{ dbt.string_literal(target_relation.render()) }}, {{ dbt.string_literal(signature) }}, now())
        on conflict (view_relation)
        do update set signature = excluded.signature, built_at = excluded.built_at
    {%- endcall -%}
    {{ adapter.commit() }}
    {{ return(built) }}
{%- endmaterialization -%}
