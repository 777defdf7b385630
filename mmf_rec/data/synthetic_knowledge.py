"""What the synthetic items look like: their descriptions and pictures.

The hidden attributes of the click model (colour, material, style) are
written here and nowhere else: in a description drawn from a few sentence
templates, and in a small picture whose fill is the colour, pattern the
style, grain the material and shape the category. A model that reads the
item knowledge can recover them; one that sees only ids and categoricals
cannot.
"""

from pathlib import Path
from typing import Any, Dict

import numpy as np

from mmf_rec.data.prepared_layout import DESCRIPTIONS_FILE, IMAGES_DIR, ITEMS, write_json
from mmf_rec.data.synthetic_config import (
    CATEGORY_NOUNS, KNOWLEDGE_STREAM, PHOTOS_STREAM, GeneratorConfig, random_stream)
from mmf_rec.data.synthetic_world import COLOURS, MATERIALS, STYLES, Items

TEMPLATES = (
    "{A_style} {material} {noun} in {colour} by Brand {brand}.",
    "{Colour} {noun} from Brand {brand}, made of {material} with {a_style} look.",
    "Brand {brand} presents {a_style} {noun} in {colour} {material}.",
    "This {colour} {noun} is cut from {material} in {a_style} style. Brand {brand}.",
)


def describe(items: Items, item_id: int, template: int) -> str:
    colour = COLOURS[items.colour[item_id]][0]
    style = STYLES[items.style[item_id]]
    a_style = ("an " if style[0] in "aeiou" else "a ") + style
    return TEMPLATES[template].format(
        a_style=a_style,
        A_style=a_style.capitalize(),
        material=MATERIALS[items.material[item_id]],
        noun=CATEGORY_NOUNS[items.category[item_id]],
        colour=colour,
        Colour=colour.capitalize(),
        brand=int(items.brand[item_id]),
    )


def _contrast(rgb) -> tuple:
    """A shade that stands out from ``rgb``: darker on light, lighter on dark."""
    luminance = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    if luminance > 110:
        return tuple(int(c * 0.45) for c in rgb)
    return tuple(int(c + (255 - c) * 0.55) for c in rgb)


def draw_item(items: Items, item_id: int, size: int, noise: np.ndarray):
    """Colour fills the picture; category picks the shape, style the pattern,
    material the grain (noise amplitude). ``noise`` is (size, size) in [-1, 1].
    """
    from PIL import Image, ImageDraw

    fill = COLOURS[items.colour[item_id]][1]
    ink = _contrast(fill)
    image = Image.new("RGB", (size, size), fill)
    draw = ImageDraw.Draw(image)
    step = max(size // 8, 2)
    style = int(items.style[item_id])
    for offset in range(step // 2, 2 * size if style == 4 else size, step):
        if style == 1:
            draw.line([(0, offset), (size, offset)], fill=ink)
        elif style == 2:
            draw.line([(offset, 0), (offset, size)], fill=ink)
        elif style == 3:
            for x in range(step // 2, size, step):
                draw.point((x, offset), fill=ink)
        elif style == 4:
            draw.line([(offset, 0), (0, offset)], fill=ink)
    lo, hi = int(size * 0.3), int(size * 0.7)
    shape = int(items.category[item_id]) % 4
    if shape == 0:
        draw.ellipse([lo, lo, hi, hi], fill=ink)
    elif shape == 1:
        draw.rectangle([lo, lo, hi, hi], fill=ink)
    elif shape == 2:
        draw.polygon([(size // 2, lo), (hi, hi), (lo, hi)], fill=ink)
    else:
        mid = size // 2
        draw.polygon([(mid, lo), (hi, mid), (mid, hi), (lo, mid)], fill=ink)
    amplitude = 3 + 3 * int(items.material[item_id])
    grain = np.rint(noise * amplitude).astype(np.int16)[..., None]
    pixels = np.asarray(image, dtype=np.int16) + grain
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def write_knowledge(root: Path, items: Items, config: GeneratorConfig,
                    progress: bool = True) -> Dict[str, Any]:
    rng = random_stream(config, KNOWLEDGE_STREAM)
    n = len(items)
    templates = rng.integers(0, len(TEMPLATES), n)
    descriptions = [describe(items, i, templates[i]) for i in range(n)]
    items_dir = root / ITEMS
    text_sha = write_json(items_dir / DESCRIPTIONS_FILE, descriptions)

    image_dir = items_dir / IMAGES_DIR
    image_dir.mkdir(parents=True, exist_ok=True)
    size = config.image_size
    ids = range(n)
    if progress:
        from tqdm import tqdm

        ids = tqdm(ids, desc="item images", unit="img", mininterval=1.0,
                   disable=n < 5000)
    without_photo = random_stream(config, PHOTOS_STREAM).random(n) < config.missing_image_fraction
    for i in ids:
        noise = rng.uniform(-1.0, 1.0, (size, size))
        if not without_photo[i]:
            draw_item(items, i, size, noise).save(image_dir / f"{i}.png", format="PNG")
    image = {"kind": "image", "path": f"{ITEMS}/{IMAGES_DIR}",
             "pattern": "{item_id}.png", "size": [size, size]}
    if without_photo.any():
        image.update(images_may_be_missing=True, missing=int(without_photo.sum()))
    return {
        "description": {"kind": "text", "path": f"{ITEMS}/{DESCRIPTIONS_FILE}",
                        "sha256": text_sha},
        "image": image,
    }
