"""mmf_rec's zoo keys in MMF's zoo functions, and archives unpacked safely.

``kbrec.<model>.<name>`` keys load offline, from local files, checked
against the data (:mod:`mmf_rec.zoo`), through MMF's own entry points:
``download_pretrained_model``, ``load_pretrained_model`` and
``Model.from_pretrained`` (``checkpoint.resume_zoo`` goes through the kbrec
trainer's :class:`~mmf_rec.checkpoint.KBRecCheckpoint`). Every other key
goes to MMF's zoo and loader as before.
"""

import functools
import os

from mmf_rec.compat.shims import once
from mmf_rec.plugin import rebind


def install():
    load_zoo_models_by_key()
    unpack_archives_safely()


@once
def load_zoo_models_by_key():
    import mmf.models.base_model as base_model
    import mmf.utils.checkpoint as checkpoint
    import mmf.utils.download as download

    from mmf_rec import zoo

    original_download = download.download_pretrained_model

    @functools.wraps(original_download)
    def download_pretrained_model(model_name, *args, **kwargs):
        if zoo.owns(model_name):
            return str(zoo.fetch(model_name))
        return original_download(model_name, *args, **kwargs)

    rebind(download, "download_pretrained_model", download_pretrained_model)

    original_load = checkpoint.load_pretrained_model

    @functools.wraps(original_load)
    def load_pretrained_model(model_name_or_path, *args, **kwargs):
        if zoo.owns(model_name_or_path):
            return zoo.load_pretrained_model(model_name_or_path)
        return original_load(model_name_or_path, *args, **kwargs)

    rebind(checkpoint, "load_pretrained_model", load_pretrained_model)

    original_from_pretrained = base_model.BaseModel.from_pretrained.__func__

    @functools.wraps(original_from_pretrained)
    def from_pretrained(cls, model_name, *args, **kwargs):
        if zoo.owns(model_name):
            return zoo.from_pretrained(cls, model_name, *args, **kwargs)
        return original_from_pretrained(cls, model_name, *args, **kwargs)

    base_model.BaseModel.from_pretrained = classmethod(from_pretrained)


@once
def unpack_archives_safely():
    """rc10's ``decompress`` (zoo and dataset downloads) unpacks with no
    checks: a ``../`` member lands outside the target folder."""
    import mmf.utils.download as download

    from mmf_rec import safe_load

    def decompress(path, fname, delete_original=True):
        archive = os.path.join(path, fname)
        safe_load.extract(archive, path)
        if delete_original:
            os.remove(archive)

    rebind(download, "decompress", decompress)
