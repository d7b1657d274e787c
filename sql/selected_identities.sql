-- selected_identities: n_ids of the eligible identities, sampled with the seed.
-- Order is md5(seed, identity): the same seed gives the same identities whatever
-- the scan order, thread count or DuckDB version (random() would not).
-- With identity-level attribute quotas (celebcat select --quota Male=0.5) the
-- sample is the balanced one catalog/quotas.py stored in quota_identities.
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
  and not exists (select 1 from quota_identities)

union all

select e.identity, e.n_clean, q.pick
from quota_identities as q
join eligible_identities as e using (identity)
