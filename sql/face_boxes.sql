-- face_boxes: each selected image's face box shrunk by box_shrink (5%) about its
-- centre, as the reference workflow cropped for the landmark model, then clamped
-- to the image (which is why this view needs the image index). Coordinates are
-- pixels of the in-the-wild image; x_2/y_2 are exclusive.
with shrunk as (
    select
        s.image_id,
        s.identity,
        s.x_1 + s.width * param('box_shrink') / 2 as fx_1,
        s.y_1 + s.height * param('box_shrink') / 2 as fy_1,
        s.x_1 + s.width * (1 - param('box_shrink') / 2) as fx_2,
        s.y_1 + s.height * (1 - param('box_shrink') / 2) as fy_2,
        i.width as image_width,
        i.height as image_height,
        i.path
    from selection as s
    join images as i using (image_id)
)

select
    image_id,
    identity,
    greatest(round(fx_1), 0)::integer as x_1,
    greatest(round(fy_1), 0)::integer as y_1,
    least(round(fx_2), image_width)::integer as x_2,
    least(round(fy_2), image_height)::integer as y_2,
    image_width,
    image_height,
    path
from shrunk
