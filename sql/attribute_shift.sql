-- attribute_shift: how the selection differs from the whole dataset, per
-- attribute (the reference workflow's step 1b): the positive share over all
-- images, over the selection, and the difference in percentage points, largest
-- absolute difference first.
with everything as (
    unpivot attributes on columns(* exclude (image_id)) into name attribute value positive
),

chosen as (
    select e.*
    from everything as e
    semi join selection as s using (image_id)
),

share_all as (
    select attribute, avg(positive::int) as share_all from everything group by attribute
),

share_sel as (
    select attribute, avg(positive::int) as share_selected from chosen group by attribute
)

select
    attribute,
    round(share_all, 4) as share_all,
    round(share_selected, 4) as share_selected,
    round(100 * (share_selected - share_all), 2) as diff_points
from share_all
left join share_sel using (attribute)
order by abs(share_selected - share_all) desc nulls last, attribute
