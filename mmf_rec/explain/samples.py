"""The rows that get explained: one user's latest row, or many users each
paired with random catalogue items."""

from typing import Dict, Tuple

import numpy as np
import torch
from torch import Tensor


def user_sample(data, user_id: int, split: str = "test") -> Dict[str, Tensor]:
    """A one-row batch of a user's features and history, as the model reads
    them: the user's last row in ``split`` (else in the last split that has
    the user), i.e. the user as of the latest interaction we know of."""
    from mmf_rec.data.dataset import KBRecDataset

    order = [split] + [s for s in ("test", "val", "train") if s != split]
    for name in order:
        if name not in data.split_names:
            continue
        users = np.asarray(data.split(name)["user_id"])[:, 0]
        rows = np.flatnonzero(users == int(user_id))
        if rows.size:
            dataset = KBRecDataset(data, name, dataset_name=data.name, dataset_type="test")
            return dataset.__getitems__([int(rows[-1])])
    raise KeyError(f"user {user_id} has no row in splits {order}")


def sample_pairs(data, users: int = 500, candidates: int = 4, split: str = "test",
                 seed: int = 0) -> Tuple[Dict[str, Tensor], Tensor]:
    """``users`` distinct users of ``split`` (each at their last row there)
    and ``candidates`` items per user drawn uniformly from the catalogue: a
    batch of users * candidates rows and the items (N,) to pair them with."""
    from mmf_rec.data.dataset import KBRecDataset

    rng = np.random.default_rng(seed)
    user_column = np.asarray(data.split(split)["user_id"])[:, 0]
    last_row = {}
    for row, user in enumerate(user_column.tolist()):
        last_row[user] = row
    chosen = rng.choice(sorted(last_row), min(users, len(last_row)), replace=False)
    rows = np.repeat([last_row[u] for u in chosen], candidates)
    dataset = KBRecDataset(data, split, dataset_name=data.name, dataset_type="test")
    sample = dataset.__getitems__(rows.tolist())
    items = torch.from_numpy(rng.integers(0, int(data.items.rows), rows.size))
    return sample, items
