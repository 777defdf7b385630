"""Files the safety tests make (not a test module): a crafted pickle, a small
shop catalogue, and the settings of their tiny ``mmf_run`` runs."""

import builtins
from pathlib import Path

from PIL import Image

QUICK = ["training.batch_size=256", "training.max_updates=20", "training.log_interval=20",
         "training.evaluation_interval=20", "training.checkpoint_interval=20"]


class Payload:
    """Unpickling it creates ``marker``: proof that loading ran code from the file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


SHOP_YAML = """
name: shop
items: {path: items.csv, id: item_id, categorical: [category], text: [title],
        image: photo, images_root: photos}
users: {path: users.csv, id: user_id, dense: [income]}
interactions: {path: clicks.csv, user: user_id, item: item_id, label: clicked, timestamp: ts}
split: {protocol: time, train_fraction: 0.6, val_fraction: 0.2}
bad_rows: {policy: skip, max_bad_fraction: 0.2}
"""
INCOMES = [30000, 42000, 1e308, 51000, 38000, 45000, 33000, 47000]


def write_shop(root: Path, clicks_tail=(), photos=None) -> Path:
    """Six items, eight users (one with an income of 1e308), every user
    clicking every item; users take turns, so all of them train."""
    (root / "photos").mkdir(parents=True)
    items = ["item_id,category,title,photo"]
    for i in range(6):
        items.append(f"i{i},c{i % 2},Thing {i},p{i}.png")
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(root / "photos" / f"p{i}.png")
    for name, data in (photos or {}).items():
        (root / "photos" / name).write_bytes(data)
    (root / "items.csv").write_text("\n".join(items) + "\n")
    users = ["user_id,income"] + [f"u{u},{v!r}" for u, v in enumerate(INCOMES)]
    (root / "users.csv").write_text("\n".join(users) + "\n")
    clicks, t = ["user_id,item_id,clicked,ts"], 1_600_000_000
    for i in range(6):
        for u in range(len(INCOMES)):
            t += 60
            clicks.append(f"u{u},i{i},{(u + i) % 2},{t}")
    (root / "clicks.csv").write_text("\n".join([*clicks, *clicks_tail]) + "\n")
    (root / "data.yaml").write_text(SHOP_YAML)
    return root / "data.yaml"
