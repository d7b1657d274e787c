-- recognition_split: where each selected image goes for face recognition
-- (the reference workflow's steps 3 and 5).
-- holdout_ids of the selected identities never reach training: query_ids of them
-- give query_images each (split 'query'), distractor_ids give distractor_images
-- each ('distractor'). Every other identity splits its images train_per_id /
-- val_per_id / test_per_id ('train', 'val', 'test') by its seeded image order.
with identity_role as (
    select
        identity,
        row_number() over (
            order by md5(concat(param('seed')::bigint, ':holdout:', identity)), identity
        ) as holdout_rank
    from selected_identities
),

roles as (
    select
        identity,
        case
            when holdout_rank <= param('query_ids') then 'query'
            when holdout_rank <= param('query_ids') + param('distractor_ids') then 'distractor'
            when holdout_rank <= param('holdout_ids') then 'holdout_unused'
            else 'closed'
        end as role
    from identity_role
)

select
    s.image_id,
    s.identity,
    case
        when r.role = 'query' and s.pick_in_id <= param('query_images') then 'query'
        when r.role = 'distractor' and s.pick_in_id <= param('distractor_images') then 'distractor'
        when r.role = 'closed' and s.pick_in_id <= param('train_per_id') then 'train'
        when r.role = 'closed' and s.pick_in_id <= param('train_per_id') + param('val_per_id')
            then 'val'
        when r.role = 'closed'
            and s.pick_in_id <= param('train_per_id') + param('val_per_id') + param('test_per_id')
            then 'test'
    end as split
from selection as s
join roles as r using (identity)
where split is not null
