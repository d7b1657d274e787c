"""The CelebA annotation files: names, layouts and columns, in one place.

Every reader and writer in the project (ingest, the synthetic generator, tests)
takes file names and column names from here, so the two layouts can never drift
apart. The layouts are those of the official CelebA release and of the Kaggle
copy (jessicali9530/celeba-dataset).

Official txt files::

    list_attr_celeba.txt     count / 40 names / 000001.jpg -1  1  1 -1 ...
    list_bbox_celeba.txt     count / image_id x_1 y_1 width height / 000001.jpg    95   71  226  313
    list_landmarks_celeba.txt        count / lefteye_x ... rightmouth_y / 000001.jpg   165  184 ...
    list_landmarks_align_celeba.txt  the same, in the 178x218 aligned frame
    identity_CelebA.txt            000001.jpg 2880           (no count, no header)
    list_eval_partition.txt        000001.jpg 0              (no count, no header)

Kaggle CSVs: ``image_id,<columns>`` header, comma separated, no count line.
"""

from __future__ import annotations

from dataclasses import dataclass

#: CelebA's 40 binary attributes, in file order. Names are kept exactly as CelebA
#: spells them (including the leading digit of ``5_o_Clock_Shadow``), so SQL that
#: names them must quote that one: ``"5_o_Clock_Shadow"``.
ATTRIBUTES: tuple[str, ...] = (
    "5_o_Clock_Shadow",
    "Arched_Eyebrows",
    "Attractive",
    "Bags_Under_Eyes",
    "Bald",
    "Bangs",
    "Big_Lips",
    "Big_Nose",
    "Black_Hair",
    "Blond_Hair",
    "Blurry",
    "Brown_Hair",
    "Bushy_Eyebrows",
    "Chubby",
    "Double_Chin",
    "Eyeglasses",
    "Goatee",
    "Gray_Hair",
    "Heavy_Makeup",
    "High_Cheekbones",
    "Male",
    "Mouth_Slightly_Open",
    "Mustache",
    "Narrow_Eyes",
    "No_Beard",
    "Oval_Face",
    "Pale_Skin",
    "Pointy_Nose",
    "Receding_Hairline",
    "Rosy_Cheeks",
    "Sideburns",
    "Smiling",
    "Straight_Hair",
    "Wavy_Hair",
    "Wearing_Earrings",
    "Wearing_Hat",
    "Wearing_Lipstick",
    "Wearing_Necklace",
    "Wearing_Necktie",
    "Young",
)

BBOX_COLUMNS: tuple[str, ...] = ("x_1", "y_1", "width", "height")

#: The five landmarks: eye centres, nose tip, mouth corners. "left" and "right" are
#: CelebA's, seen from the viewer: in an upright face ``lefteye_x < righteye_x``.
LANDMARK_POINTS: tuple[str, ...] = ("lefteye", "righteye", "nose", "leftmouth", "rightmouth")
LANDMARK_COLUMNS: tuple[str, ...] = tuple(
    f"{point}_{axis}" for point in LANDMARK_POINTS for axis in ("x", "y")
)

#: list_eval_partition values.
PARTITION_NAMES: dict[int, str] = {0: "train", 1: "valid", 2: "test"}

#: Size of the official aligned images (img_align_celeba/).
ALIGNED_SIZE: tuple[int, int] = (178, 218)


@dataclass(frozen=True)
class FileSpec:
    """One annotation file in one layout.

    ``table`` is the catalog table it loads into; ``columns`` the value columns after
    ``image_id``; ``kind`` how values are checked: ``"attr"`` (-1/1), ``"int"``
    (integers, may be negative for landmarks outside the frame), ``"partition"``
    (0/1/2). ``count_line`` and ``header_line`` say which of the txt preamble lines
    the file has; Kaggle CSVs have a CSV header instead.
    """

    name: str
    table: str
    columns: tuple[str, ...]
    kind: str
    layout: str  # "txt" or "csv"
    count_line: bool = False
    header_line: bool = False

    @property
    def first_data_line(self) -> int:
        """1-based line number of the first data row."""
        if self.layout == "csv":
            return 2
        return 1 + int(self.count_line) + int(self.header_line)


TXT_FILES: tuple[FileSpec, ...] = (
    FileSpec("list_attr_celeba.txt", "attributes", ATTRIBUTES, "attr", "txt", True, True),
    FileSpec("list_bbox_celeba.txt", "bboxes", BBOX_COLUMNS, "int", "txt", True, True),
    FileSpec("list_landmarks_celeba.txt", "landmarks", LANDMARK_COLUMNS, "int", "txt", True, True),
    FileSpec(
        "list_landmarks_align_celeba.txt",
        "landmarks_aligned",
        LANDMARK_COLUMNS,
        "int",
        "txt",
        True,
        True,
    ),
    FileSpec("identity_CelebA.txt", "identities", ("identity",), "int", "txt"),
    FileSpec("list_eval_partition.txt", "partitions", ("partition",), "partition", "txt"),
)

CSV_FILES: tuple[FileSpec, ...] = (
    FileSpec("list_attr_celeba.csv", "attributes", ATTRIBUTES, "attr", "csv"),
    FileSpec("list_bbox_celeba.csv", "bboxes", BBOX_COLUMNS, "int", "csv"),
    FileSpec(
        "list_landmarks_align_celeba.csv", "landmarks_aligned", LANDMARK_COLUMNS, "int", "csv"
    ),
    FileSpec("list_eval_partition.csv", "partitions", ("partition",), "partition", "csv"),
)

ALL_FILES: tuple[FileSpec, ...] = TXT_FILES + CSV_FILES

#: Annotation tables, in load order, and the value columns each holds.
ANNOTATION_TABLES: dict[str, tuple[str, ...]] = {
    "attributes": ATTRIBUTES,
    "bboxes": BBOX_COLUMNS,
    "landmarks": LANDMARK_COLUMNS,
    "landmarks_aligned": LANDMARK_COLUMNS,
    "identities": ("identity",),
    "partitions": ("partition",),
}

#: Folder names of the two image sets in the official release.
#: The splits of a selection (the recognition_split view) and of a snapshot, in the
#: order they are assigned and shown; a selected image in none of them is "unused".
SPLITS: tuple[str, ...] = ("train", "val", "test", "query", "distractor")
UNUSED_SPLIT = "unused"


def split_order_sql(column: str) -> str:
    """SQL ranking a split column in :data:`SPLITS` order (unknown names, then NULL, last)."""
    whens = " ".join(f"WHEN '{s}' THEN {i}" for i, s in enumerate(SPLITS))
    return (
        f"CASE {column} {whens} WHEN '{UNUSED_SPLIT}' THEN {len(SPLITS)} ELSE {len(SPLITS) + 1} END"
    )


WILD_IMAGE_DIR = "img_celeba"
ALIGNED_IMAGE_DIR = "img_align_celeba"
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
