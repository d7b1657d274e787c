-- eligible_identities: identities with at least min_images_per_id clean images
-- (25 in the reference workflow), so every selected identity can give
-- images_per_id of them.
select
    identity,
    count(*) as n_clean
from clean_images
group by identity
having count(*) >= param('min_images_per_id')
