"""Column names of a catalog as the kit reads it (after a column mapping, see
:func:`shopee_match.data.postings.parse_columns`) and of the columns loading adds."""

POSTING_ID = "posting_id"  # unique id of a listing
TITLE = "title"  # its title, cleaned on loading
IMAGE = "image"  # its photo's file name inside the images folder (optional)
IMAGE_PHASH = "image_phash"  # perceptual hash of the photo (optional)
LABEL_GROUP = "label_group"  # the product it is: listings sharing one are duplicates (optional)
SOURCE = "source"  # the shop or feed it comes from: matches are linked across sources (optional)

# added by loading
TITLE_RAW = "title_raw"  # the title as read
TITLE_OK = "title_ok"  # the cleaned title is not empty
IMAGE_PATH = "image_path"  # full path of the photo ("" when there is none or it was refused)
IMAGE_OK = "image_ok"  # the photo exists and could be read
LINE = "line"  # CSV line the row starts on
