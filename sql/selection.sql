-- selection: images_per_id clean images of each selected identity, sampled with
-- the seed (md5 of seed and image id), with the rank of each image within its
-- identity (pick_in_id, 1-based) for the split that follows.
-- With image-level attribute quotas (celebcat select --quota Eyeglasses=0.05) the
-- images are the balanced ones catalog/quotas.py stored in quota_images.
with ranked as (
    select
        c.*,
        row_number() over (
            partition by c.identity
            order by md5(concat(param('seed')::bigint, ':img:', c.image_id)), c.image_id
        ) as pick_in_id
    from clean_images as c
    join selected_identities as s using (identity)
)

select *
from ranked
where pick_in_id <= param('images_per_id')
  and not exists (select 1 from quota_images)

union all

select c.*, q.pick_in_id
from quota_images as q
join clean_images as c using (image_id)
