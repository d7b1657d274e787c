-- clean_images: the images good enough to train on, one row per image.
-- Drops images marked Blurry (unless drop_blurry = 0) and faces whose box is
-- narrower than min_box_w or lower than min_box_h pixels: the reference
-- workflow's step 1 (Blurry == 1 out, boxes under 100 x 100 out). Drops too
-- every image whose in-the-wild file the catalog cannot use: an error-severity
-- row of problems (not on disk, unreadable, cut short, too large, a link out of
-- the image root, or failing celebcat check --decode).
select
    a.image_id,
    i.identity,
    b.x_1,
    b.y_1,
    b.width,
    b.height
from attributes as a
join identities as i using (image_id)
join bboxes as b using (image_id)
where (not a.Blurry or param('drop_blurry') = 0)
  and b.width >= param('min_box_w')
  and b.height >= param('min_box_h')
  and not exists (
      select 1 from problems as p
      where p.image_id = a.image_id and p.severity = 'error' and p.source = 'images'
  )
