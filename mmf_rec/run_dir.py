"""Which run a save dir holds, and whether another may write into it.

Runs never overwrite each other by default: a run starts in ``env.save_dir``
only when the folder holds no finished or checkpointed run, or a run of the
same config (its fingerprint), or when the user says ``checkpoint.resume``
(continue that run) or ``checkpoint.overwrite`` (replace it).
"""

import hashlib
import json
import os

from omegaconf import OmegaConf

from mmf_rec.errors import UserError

# Config sections that say where a run happens, not what it computes.
_VOLATILE_KEYS = ("env", "distributed", "checkpoint", "device_id", "start_rank")
# A folder holding one of these holds a run (logs and config.yaml alone do not:
# a run that stopped while starting leaves them).
RUN_FILES = ("metrics.json", "best.ckpt", "current.ckpt")
CONFIG_FILE = "config.yaml"


class SaveDirInUse(UserError):
    """env.save_dir holds another config's run."""


def config_fingerprint(config) -> str:
    container = OmegaConf.to_container(config, resolve=True)
    for key in _VOLATILE_KEYS:
        container.pop(key, None)
    text = json.dumps(container, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _told_to_reuse(config) -> bool:
    settings = config.checkpoint
    return any(settings.get(key) for key in ("resume", "resume_file", "resume_zoo", "overwrite"))


def check_save_dir(config) -> None:
    """Raise :class:`SaveDirInUse` where this run would overwrite another's.

    Call it before the run writes its ``config.yaml`` (MMF's Checkpoint does,
    when it is built), with the config at the same stage as that file's.
    """
    if _told_to_reuse(config):
        return
    save_dir = str(config.env.save_dir)
    held = [name for name in RUN_FILES if os.path.exists(os.path.join(save_dir, name))]
    if not held:
        return
    config_file = os.path.join(save_dir, CONFIG_FILE)
    if os.path.isfile(config_file):
        other = OmegaConf.load(config_file)
        if config_fingerprint(other) == config_fingerprint(config):
            return
        what = f"a run of another config ({other.get('model')} on {other.get('datasets')})"
    else:
        what = "a run with no config.yaml"
    raise SaveDirInUse(
        f"env.save_dir {save_dir} holds {what} ({', '.join(held)}): give another "
        "env.save_dir, or checkpoint.resume=True to continue that run, or "
        "checkpoint.overwrite=True to replace it"
    )
