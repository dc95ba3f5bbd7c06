"""Seeded generator of a Shopee-like dataset: marketplace titles and rendered photos.

Products come in families that differ only in one attribute (model number,
capacity, colour, pack size), so hard negatives look nearly the same in title
and photo. Each product (one ``label_group``) is listed by several sellers,
each with their own title habits (promo noise, casing, typos, word order,
Indonesian/English words) and photo style (background, crop, rotation,
lighting, frame, watermark, JPEG quality); some sellers reuse another listing's
photo file, as on Shopee. Group sizes follow a power law like Shopee's (most
groups of 2-3, a tail up to 50). Output: ``train.csv`` + ``train_images/`` +
``demo.json`` in the Shopee layout, identical for a given seed and size; or, in test layout,
Kaggle's hidden-test shape (``test.csv`` + ``test_images/``, no labels) with ``solution.csv``
to score a submission. With ``shops=2`` every product is listed by two shops (a ``source``
column), the second with its own catalogue-style titles ("Brand Line attributes - noun",
no promo noise), to try linking across shops.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from shopee_match.data.schema import IMAGE, IMAGE_PHASH, LABEL_GROUP, POSTING_ID, SOURCE, TITLE

GENERATOR_VERSION = 2
#: number of listings of each named size
SIZES = {"tiny": 160, "demo": 2400, "shopee": 34_250}
IMAGE_SIZE = 192
MAX_GROUP = 50

COLOURS = {  # Indonesian name: (English name, RGB)
    "Hitam": ("Black", (35, 35, 40)), "Putih": ("White", (236, 236, 232)),
    "Merah": ("Red", (200, 40, 45)), "Biru": ("Blue", (40, 90, 190)),
    "Navy": ("Navy", (30, 40, 90)), "Hijau": ("Green", (50, 150, 80)),
    "Kuning": ("Yellow", (235, 200, 40)), "Pink": ("Pink", (235, 130, 170)),
    "Abu": ("Grey", (140, 140, 145)), "Maroon": ("Maroon", (120, 25, 40)),
}


@dataclass(frozen=True)
class Category:
    """A kind of product: title words, brands, product lines, variant axes, drawn shape."""

    nouns: tuple[str, ...]
    brands: tuple[str, ...]
    lines: tuple[str, ...]
    axes: dict[str, tuple[str, ...]]
    shape: str


CATEGORIES = (
    Category(("VGA", "Graphics Card", "Kartu Grafis"),
             ("ZOTAC", "MSI", "GIGABYTE", "ASUS", "GALAX"),
             ("Gaming OC", "Twin Edge", "Ventus 2X", "Eagle", "Dual Fan"),
             {"model": ("RTX 4060", "RTX 4070", "RTX 5070", "RTX 5080", "RTX 5090"),
              "memory": ("8GB", "12GB", "16GB")}, "card"),
    Category(("RAM", "Memory", "Memori PC"), ("Corsair", "Kingston", "TeamGroup", "ADATA", "V-GeN"),
             ("Vengeance", "Fury Beast", "T-Force Delta", "XPG Spectrix"),
             {"kit": ("1x8GB", "2x8GB", "1x16GB", "2x16GB"), "type": ("DDR4 3200MHz",
              "DDR4 3600MHz", "DDR5 5600MHz")}, "stick"),
    Category(("Flashdisk", "Flash Drive", "USB Flash"), ("SanDisk", "Kingston", "Toshiba", "HP"),
             ("Cruzer Blade", "DataTraveler", "Ultra Flair", "TransMemory"),
             {"capacity": ("16GB", "32GB", "64GB", "128GB"), "usb": ("USB 2.0", "USB 3.0")},
             "stick"),
    Category(("Serum", "Face Serum", "Serum Wajah"), ("Somethinc", "Wardah", "Scarlett", "Avoskin"),
             ("Vitamin C Brightening", "Niacinamide 10%", "Retinol Night", "Hyaluronic Hydrating"),
             {"volume": ("15ml", "20ml", "30ml"), "pack": ("1pcs", "isi 2", "isi 3")}, "bottle"),
    Category(("Lip Cream", "Lipstik", "Lipstick"), ("Wardah", "Emina", "Make Over", "Pixy"),
             ("Matte Lip Cream", "Colorfit Velvet", "Exclusive Matte"),
             {"shade": ("01 Nude", "02 Rose", "03 Red", "04 Coral", "05 Mauve")}, "tube"),
    Category(("Kopi", "Coffee", "Kopi Sachet"), ("Kapal Api", "Torabika", "Good Day", "Luwak"),
             ("Cappuccino", "Mocacinno", "Special Mix", "Kopi Susu Gula Aren"),
             {"weight": ("20gr", "25gr", "30gr"), "pack": ("isi 5", "isi 10", "isi 20")}, "pouch"),
    Category(("Keripik", "Snack", "Cemilan"), ("Maicih", "Qtela", "Chitato", "Kusuka"),
             ("Singkong Pedas", "Balado", "Original", "Jagung Bakar"),
             {"weight": ("100gr", "250gr", "500gr", "1kg"), "level": ("Level 3", "Level 5",
              "Level 10")}, "pouch"),
    Category(("Kaos", "T-Shirt", "Baju Kaos"), ("Erigo", "Cottonology", "Uniqlo", "Polo"),
             ("Polos Oversize", "Basic Crew Neck", "Cotton Combed 30s"),
             {"colour": ("Hitam", "Putih", "Navy", "Maroon", "Abu"), "size": ("S", "M", "L", "XL",
              "XXL")}, "shirt"),
    Category(("Tumbler", "Botol Minum", "Water Bottle"), ("Tupperware", "Lock&Lock", "Corkcicle"),
             ("Stainless Vacuum", "Eco Bottle", "Hot & Cold"),
             {"volume": ("350ml", "500ml", "750ml", "1L"), "colour": ("Hitam", "Putih", "Biru",
              "Pink", "Hijau")}, "bottle"),
    Category(("Case", "Softcase", "Casing HP"), ("Spigen", "Baseus", "Nillkin", "UAG"),
             ("Ultra Hybrid", "Tough Armor", "Liquid Crystal"),
             {"phone": ("iPhone 13", "iPhone 14", "iPhone 15", "Samsung A54", "Redmi Note 12"),
              "colour": ("Hitam", "Biru", "Merah", "Kuning")}, "phone"),
    Category(("Popok", "Diapers", "Popok Bayi"), ("MamyPoko", "Merries", "Sweety", "Huggies"),
             ("Pants Extra Soft", "Pants Standar", "Royal Soft"),
             {"size": ("S", "M", "L", "XL"), "pack": ("isi 20", "isi 34", "isi 52")}, "box"),
    Category(("Charger", "Kepala Charger", "Adaptor"), ("Anker", "Baseus", "Ugreen", "Xiaomi"),
             ("Fast Charging", "GaN", "Nano"),
             {"power": ("20W", "33W", "65W"), "port": ("USB-C", "Dual Port")}, "box"),
)

PROMO = ("READY STOCK", "COD", "ORIGINAL 100%", "PROMO", "BISA COD", "TERMURAH", "BEST SELLER",
         "GROSIR", "FREE BUBBLE WRAP", "NEW", "SALE", "BPOM", "Garansi Resmi", "Murah",
         "Kualitas Premium", "Terlaris")
EMOJI = ("\U0001F525", "\u2705", "\u2B50", "\U0001F4AF", "\u2764\uFE0F", "\U0001F381")
BRACKETS = (("[", "]"), ("(", ")"), ("\u3010", "\u3011"), ("", ""), ("", ""))
EDITIONS = ("", "", "", "", "Pro", "Plus", "Lite", "V2", "Gen 3", "Max", "Mini", "Series 5",
            "2024", "X", "Ultra", "Neo", "Prime", "Edge", "Air", "Elite", "Classic", "S")
MODEL_LETTERS = "ABCEGKMNRSTVXZ"
#: the two shops of a two-shop demo (``shops=2``): a marketplace and a catalogue-style store
TWO_SHOPS = ("marketplace", "store")
SHOPS = ("toko_murah", "grosir.jkt", "official store", "bdg_shop", "SURABAYA", "mall_id",
         "storeku", "gudang88")


def group_sizes(n_rows: int, rng: np.random.Generator, alpha: float = 3.0) -> np.ndarray:
    """Sizes (2..50) of label groups that add up to ``n_rows``, P(size) ~ size**-alpha."""
    if n_rows < 2:
        raise ValueError(f"a dataset needs at least 2 listings, got {n_rows}")
    support = np.arange(2, MAX_GROUP + 1)
    p = support.astype(float) ** -alpha
    sizes = rng.choice(support, size=n_rows, p=p / p.sum())
    sizes = sizes[: np.searchsorted(np.cumsum(sizes), n_rows) + 1]
    sizes[-1] -= sizes.sum() - n_rows
    if sizes[-1] < 2:  # fold a remainder of 0/1 into the previous group
        sizes[-2] += sizes[-1]
        sizes = sizes[:-1]
    return sizes


def generate_demo(
    dest: str | Path, size: str | int = "demo", seed: int = 0, progress: bool = True,
    layout: str = "train", shops: int = 1,
) -> Path:
    """Write a Shopee-layout dataset to ``dest`` and return it; skip if already there.

    ``size`` is a name from :data:`SIZES` or a number of listings. ``layout`` ``"test"``
    writes it as a hidden test set (``test.csv`` without labels, ``test_images/``,
    ``solution.csv``): use another ``seed`` than the train set's for other products.
    The folder is built beside ``dest`` and renamed into place, so an interrupted run
    never leaves a half-written dataset. ``shops=2`` lists each product in two shops
    (:data:`TWO_SHOPS`, in a ``source`` column), each with its own title style.
    """
    if layout not in ("train", "test"):
        raise ValueError(f"layout must be 'train' or 'test', not {layout!r}")
    if shops not in (1, 2):
        raise ValueError(f"shops must be 1 or 2, not {shops!r}")
    dest = Path(dest)
    n_rows = SIZES[size] if isinstance(size, str) else int(size)
    meta = {"generator_version": GENERATOR_VERSION, "n_rows": n_rows, "seed": seed,
            "image_size": IMAGE_SIZE}
    if layout == "test":
        meta["layout"] = "test"
    if shops == 2:
        meta["shops"] = list(TWO_SHOPS)
    meta_file = dest / "demo.json"
    if meta_file.is_file() and json.loads(meta_file.read_text()) == meta:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        _write_dataset(work, n_rows, seed, progress, shops)
        if layout == "test":
            _to_test_layout(work)
        (work / "demo.json").write_text(json.dumps(meta, indent=1))
        if dest.exists():
            shutil.rmtree(dest)
        work.rename(dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def generate_titles(n_rows: int, seed: int = 0, model_numbers: bool = False) -> list[str]:
    """``n_rows`` seller titles of the demo's products in groups of duplicates, without photos
    (fast: for text-only runs at hundreds of thousands of listings). The demo's catalogue has
    distinct products for about 100,000 titles; ``model_numbers`` gives every product line a
    model number ("Royal Soft R394"), as large catalogues have: room for millions."""
    rng = np.random.default_rng(seed)
    sizes = group_sizes(n_rows, rng)
    products = _products(len(sizes), rng, model_numbers)
    titles = [_seller_title(p, rng) for p, size in zip(products, sizes) for _ in range(size)]
    return [titles[i] for i in rng.permutation(len(titles))]


def _write_dataset(folder: Path, n_rows: int, seed: int, progress: bool, shops: int = 1
                   ) -> None:
    import imagehash
    from PIL import Image

    from shopee_match.progress import progress_bar

    rng = np.random.default_rng(seed)
    images = folder / "train_images"
    images.mkdir(parents=True)
    sizes = group_sizes(n_rows, rng)
    products = _products(len(sizes), rng)
    labels = 10**8 + rng.choice(39 * 10**8, size=len(sizes), replace=False)
    ids = 10**8 + rng.choice(39 * 10**8, size=n_rows, replace=False)
    photo_of = {}  # (group index) -> file names already used, for reuse
    rows = []
    bar = progress_bar(total=n_rows, desc="generating demo listings", disable=not progress)
    for g, (product, size) in enumerate(zip(products, sizes)):
        canonical = _draw_product(product)
        used = photo_of.setdefault(g, [])
        for member in range(size):
            shop = member % shops  # with two shops, both list every product
            sibling = photo_of.get(product["sibling_group"], [])
            if used and rng.random() < 0.15:
                name = used[rng.integers(len(used))]  # seller reuses a listing's photo
            elif sibling and rng.random() < 0.05:
                name = sibling[0]  # same photo used for a different variant
            else:
                name = hashlib.md5(f"{seed}-{len(rows)}".encode()).hexdigest() + ".jpg"
                _seller_photo(canonical, product, rng).save(
                    images / name, quality=int(rng.integers(60, 95)))
                used.append(name)
            title = _shop_title(product, rng) if shop == 1 else _seller_title(product, rng)
            rows.append({POSTING_ID: f"train_{ids[len(rows)]}", IMAGE: name, TITLE: title,
                         LABEL_GROUP: labels[g], **({SOURCE: TWO_SHOPS[shop]} if shops == 2
                                                    else {})})
            bar.update()
    bar.close()
    df = pd.DataFrame(rows).iloc[rng.permutation(len(rows))]  # Shopee's file is not grouped
    hashes = {n: str(imagehash.phash(Image.open(images / n))) for n in df[IMAGE].unique()}
    df.insert(2, IMAGE_PHASH, df[IMAGE].map(hashes))
    df.to_csv(folder / "train.csv", index=False)


def _to_test_layout(folder: Path) -> None:
    """Turn a freshly written ``train.csv`` + ``train_images/`` into the test layout."""
    from shopee_match.data.postings import load_postings, write_test_layout

    postings, _ = load_postings(folder / "train.csv", check_images="exists", progress=False)
    write_test_layout(postings, folder)  # hard links to train_images/, removed below
    (folder / "train.csv").unlink()
    shutil.rmtree(folder / "train_images")


def _products(n_groups: int, rng: np.random.Generator, model_numbers: bool = False
              ) -> list[dict]:
    """Distinct products in families of 1-4 variants that differ along one axis (hard negatives).

    No two groups share category, brand, line (with its edition and, with ``model_numbers``,
    a model number such as "K417") and attributes, so every group is a different product, as
    the labels claim.
    """
    products: list[dict] = []
    seen: set[tuple] = set()
    attempts = 0
    while len(products) < n_groups:
        attempts += 1
        if attempts > 20 * n_groups + 1000:
            raise ValueError(f"the demo catalogue cannot make {n_groups} distinct products"
                             + ("" if model_numbers else "; generate_titles(model_numbers=True)"
                                " makes room for millions of titles"))
        c = int(rng.integers(len(CATEGORIES)))
        cat = CATEGORIES[c]
        base = {axis: opts[rng.integers(len(opts))] for axis, opts in cat.axes.items()}
        brand = cat.brands[rng.integers(len(cat.brands))]
        line = cat.lines[rng.integers(len(cat.lines))]
        if model_numbers:
            line += f" {MODEL_LETTERS[rng.integers(len(MODEL_LETTERS))]}{rng.integers(10, 1000)}"
        family = {"category": cat, "noun": cat.nouns[0], "brand": brand,
                  "line": f"{line} {EDITIONS[rng.integers(len(EDITIONS))]}".strip(),
                  "colour": tuple(int(v) for v in rng.integers(30, 230, size=3)),
                  "accent": tuple(int(v) for v in rng.integers(0, 255, size=3))}
        axis = list(cat.axes)[rng.integers(len(cat.axes))]
        n_variants = min(int(rng.choice([1, 2, 3, 4], p=[0.4, 0.3, 0.2, 0.1])),
                         len(cat.axes[axis]), n_groups - len(products))
        variants = []
        for value in rng.choice(cat.axes[axis], size=n_variants, replace=False):
            attrs = {**base, axis: str(value)}
            key = (c, family["brand"], family["line"], tuple(attrs.items()))
            if key not in seen:
                seen.add(key)
                variants.append(attrs)
        first = len(products)
        for i, attrs in enumerate(variants):
            colour = COLOURS[attrs["colour"]][1] if "colour" in attrs else family["colour"]
            sibling = None if len(variants) == 1 else first + 1 if i == 0 else first
            products.append({**family, "attrs": attrs, "colour": colour,
                             "sibling_group": sibling})
    return products


def _seller_title(product: dict, rng: np.random.Generator) -> str:
    """One seller's title for a product: synonyms, units, order, promo noise, casing, typos."""
    cat = product["category"]
    attrs = [_format_attr(axis, value, rng) for axis, value in product["attrs"].items()]
    segments = [cat.nouns[rng.integers(len(cat.nouns))], product["brand"], product["line"],
                *attrs]
    if rng.random() < 0.2:
        segments.pop(0)  # no product noun
    if rng.random() < 0.3:
        segments = [segments[i] for i in rng.permutation(len(segments))]
    words = " ".join(segments).split()
    if rng.random() < 0.2:
        words = _typo(words, rng)
    title = " ".join(words)
    case = rng.random()
    title = title.upper() if case < 0.2 else title.lower() if case < 0.3 else (
        title.title() if case < 0.45 else title)
    for where in ("prefix", "suffix"):
        if rng.random() < 0.35:
            promo = PROMO[rng.integers(len(PROMO))]
            left, right = BRACKETS[rng.integers(len(BRACKETS))]
            title = f"{left}{promo}{right} {title}" if where == "prefix" else f"{title} {promo}"
    if rng.random() < 0.12:
        emoji = EMOJI[rng.integers(len(EMOJI))]
        if rng.random() < 0.3:  # as Shopee's CSV sometimes has them: literal UTF-8 escapes
            emoji = "".join(f"\\x{b:02x}" for b in emoji.encode())
        title = f"{emoji} {title}" if rng.random() < 0.5 else f"{title} {emoji}"
    return title


def _shop_title(product: dict, rng: np.random.Generator) -> str:
    """The second shop's catalogue-style title: brand, line and attributes in a fixed order,
    then the product noun in English, title case, no promo noise (a typo now and then)."""
    cat = product["category"]
    attrs = [_format_attr(axis, value, rng) for axis, value in product["attrs"].items()]
    words = " ".join([product["brand"], product["line"], *attrs]).split()
    if rng.random() < 0.1:
        words = _typo(words, rng)
    return f"{' '.join(words)} - {cat.nouns[1]}".title()


def _format_attr(axis: str, value: str, rng: np.random.Generator) -> str:
    """Spell an attribute as different sellers do: '500ml', '500 ML', 'isi 10' / '10 pcs'…"""
    r = rng.random()
    if axis == "colour":
        english = COLOURS[value][0]
        return (english if r < 0.4 else f"warna {value}" if r < 0.6 else value)
    if axis == "pack" and value.startswith("isi "):
        n = value.split()[1]
        return f"{n} pcs" if r < 0.3 else f"{n}pcs" if r < 0.45 else value
    digits = len(value) - len(value.lstrip("0123456789"))
    if 0 < digits < len(value) and value[digits:].isalpha():  # number + unit
        number, unit = value[:digits], value[digits:]
        if r < 0.25:
            return f"{number} {unit}"
        if r < 0.45:
            return f"{number}{unit.upper()}"
    return value


def _typo(words: list[str], rng: np.random.Generator) -> list[str]:
    long = [i for i, w in enumerate(words) if len(w) >= 5 and w.isalpha()]
    if not long:
        return words
    i = long[rng.integers(len(long))]
    w = words[i]
    j = int(rng.integers(1, len(w) - 1))
    words = list(words)
    words[i] = (w[:j] + w[j + 1:]) if rng.random() < 0.5 else (w[:j - 1] + w[j] + w[j - 1] +
                                                                w[j + 1:])
    return words


def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _draw_product(product: dict):
    """The product itself on a transparent 256 px canvas: shape, colours, label text."""
    from PIL import Image, ImageDraw

    canvas = Image.new("RGBA", (256, 256), (0, 0, 0, 0))
    d = ImageDraw.Draw(canvas)
    body, accent = product["colour"], product["accent"]
    shape = product["category"].shape
    boxes = {"card": (16, 70, 240, 186), "stick": (70, 30, 186, 226), "bottle": (78, 40, 178, 236),
             "tube": (100, 20, 156, 236), "pouch": (50, 30, 206, 230), "shirt": (40, 60, 216, 236),
             "phone": (74, 20, 182, 236), "box": (36, 46, 220, 220)}
    x0, y0, x1, y1 = boxes[shape]
    if shape == "bottle":
        d.rectangle((112, 14, 144, 44), fill=accent)
    if shape == "shirt":
        d.polygon([(40, 60), (90, 30), (166, 30), (216, 60), (236, 110), (200, 120)], fill=body)
        d.polygon([(40, 60), (20, 110), (56, 120)], fill=body)
    d.rounded_rectangle((x0, y0, x1, y1), radius=18 if shape in ("bottle", "phone") else 6,
                        fill=body, outline=accent, width=4)
    if shape == "card":
        for cx in (80, 176):
            d.ellipse((cx - 36, 92, cx + 36, 164), fill=(40, 40, 40), outline=accent, width=3)
    band = (x0 + 6, (y0 + y1) // 2 - 34, x1 - 6, (y0 + y1) // 2 + 34)
    d.rectangle(band, fill=(250, 250, 245))
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    d.text((cx, cy - 18), product["brand"], fill=accent, font=_font(20), anchor="mm")
    d.text((cx, cy + 2), product["line"][:22], fill=(60, 60, 60), font=_font(11), anchor="mm")
    variant = " ".join(v for k, v in product["attrs"].items() if k != "colour")
    d.text((cx, cy + 20), variant[:18], fill=(10, 10, 10), font=_font(15), anchor="mm")
    return canvas


def _seller_photo(canonical, product: dict, rng: np.random.Generator):
    """One seller's photo: background, pack copies, scale, rotation, light, frame, watermark."""
    from PIL import Image, ImageDraw, ImageEnhance

    tone = tuple(int(c) for c in rng.integers(170, 256, size=3))
    photo = Image.new("RGB", (256, 256), tone)
    d = ImageDraw.Draw(photo)
    if rng.random() < 0.4:  # a table or shelf edge behind the product
        y = int(rng.integers(150, 230))
        d.rectangle((0, y, 256, 256), fill=tuple(int(c) for c in rng.integers(90, 200, size=3)))
    pack = product["attrs"].get("pack", "")
    copies = min(3, int(pack.split()[-1])) if pack.startswith("isi") else 1
    scale = rng.uniform(0.55, 0.95) / (1 + 0.3 * (copies - 1))
    item = canonical.rotate(float(rng.uniform(-15, 15)), expand=False,
                            resample=Image.Resampling.BILINEAR)
    side = max(8, int(256 * scale))
    item = item.resize((side, side), Image.Resampling.BILINEAR)
    for c in range(copies):
        x = (int(rng.integers(0, 257 - side)) if copies == 1
             else int(c * (256 - side) / (copies - 1)))
        y = int(rng.integers(0, 257 - side))
        photo.paste(item, (x, y), item)
    photo = ImageEnhance.Brightness(photo).enhance(float(rng.uniform(0.75, 1.25)))
    photo = ImageEnhance.Contrast(photo).enhance(float(rng.uniform(0.8, 1.2)))
    d = ImageDraw.Draw(photo)
    if rng.random() < 0.3:  # promo frame with shop name, common on marketplaces
        frame = tuple(int(c) for c in rng.integers(0, 256, size=3))
        d.rectangle((0, 0, 255, 255), outline=frame, width=int(rng.integers(6, 16)))
        d.rectangle((0, 226, 256, 256), fill=frame)
        d.text((128, 241), PROMO[rng.integers(len(PROMO))], fill="white", font=_font(14),
               anchor="mm")
    if rng.random() < 0.35:  # watermark
        d.text((int(rng.integers(20, 236)), int(rng.integers(20, 236))),
               SHOPS[rng.integers(len(SHOPS))], fill=(255, 255, 255), font=_font(16), anchor="mm")
    crop = int(rng.integers(0, 24))
    photo = photo.crop((crop, crop, 256 - crop, 256 - crop))
    return photo.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
