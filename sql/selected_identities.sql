-- selected_identities: n_ids of the eligible identities, sampled with the seed.
-- Order is md5(seed, identity): the same seed gives the same identities whatever
-- the scan order, thread count or DuckDB version (random() would not).
with ranked as (
    select
        identity,
        n_clean,
        row_number() over (
            order by md5(concat(param('seed')::bigint, ':id:', identity)), identity
        ) as pick
    from eligible_identities
)

select identity, n_clean, pick
from ranked
where pick <= param('n_ids')
