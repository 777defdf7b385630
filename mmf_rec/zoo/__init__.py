"""mmf_rec's model zoo: trained runs published and loaded back by key, offline.

A key is ``kbrec.<model>.<name>`` (e.g. ``kbrec.dlrm.tiny``). Its entry in
mmf_rec's zoo file (``configs/zoo/models.yaml``, or the file named by
``$MMF_REC_MODEL_ZOO``) has MMF's zoo layout, ``version`` and ``resources``
(``url``, ``file_name``, ``hashcode`` = sha256, ``compressed``), plus what the
model depends on. MMF's own zoo (``env.model_zoo``) stays in force: a key
that is not mmf_rec's goes to MMF's loader unchanged (:func:`model_zoo`
shows both, merged).

An archive (``tools/export_zoo.py``) holds, at its root, MMF's pretrained
layout: one ``config.yaml`` (the run's config), one ``<model>.pth`` (the
weights: a state dict of tensors only, loaded with
``torch.load(weights_only=True)``), and ``zoo.json``: the key, the sha256
of both files, the run's metrics, and fingerprints of the data the model
was trained on: the feature schema (names, sides, cardinalities), the
vocabularies (item table columns and the reader's vocabulary files, by
sha256) and, for ``dlrm_mm``, the item knowledge cache entries (encoder and
item data).

``url`` may be a local file, a ``file://`` URL, or a local directory (holding
``file_name``, or the unpacked files themselves); http(s) and ``mmf://``
URLs go through MMF's downloader. Resources are copied into the cache
(``$MMF_REC_ZOO_CACHE``, else ``<env.data_dir>/models``, MMF's place) and
checked before use. Everything that can go wrong (unknown key, missing file,
checksum, data or model that does not fit) raises one :class:`ZooError`
that says what differs.

One module per step: :mod:`.entries` (zoo files and keys), :mod:`.cache`
(fetching), :mod:`.fingerprints` (what a model depends on), :mod:`.loading`,
:mod:`.publish` (export), :mod:`.bundles` (retrieve-then-rank pipelines),
with :mod:`.archive` and :mod:`.errors` shared by them.
"""

from mmf_rec.zoo.archive import CONFIG, FORMAT, META
from mmf_rec.zoo.bundles import PIPELINE, export_bundle, fetch_bundle
from mmf_rec.zoo.cache import BUILT, CACHE_ENV, cache_root, fetch
from mmf_rec.zoo.entries import (PREFIX, ZOO_ENV, entry, mmf_zoo_path, model_zoo, owns,
                                 parse_key, update_zoo_file, zoo_path)
from mmf_rec.zoo.errors import (ZooChecksumError, ZooError, ZooFileError, ZooKeyError,
                                ZooMismatchError)
from mmf_rec.zoo.fingerprints import (data_differences, data_fingerprints,
                                      knowledge_differences, knowledge_keys,
                                      state_differences, vocabulary_parts)
from mmf_rec.zoo.loading import (ZooModel, build_model, check_data, check_model,
                                 current_data, from_pretrained, load, load_for_trainer,
                                 load_pretrained_model)
from mmf_rec.zoo.publish import export

__all__ = [
    "BUILT", "CACHE_ENV", "CONFIG", "FORMAT", "META", "PIPELINE", "PREFIX", "ZOO_ENV",
    "ZooChecksumError", "ZooError", "ZooFileError", "ZooKeyError", "ZooMismatchError",
    "ZooModel", "build_model", "cache_root", "check_data", "check_model", "current_data",
    "data_differences", "data_fingerprints", "entry", "export", "export_bundle", "fetch",
    "fetch_bundle", "from_pretrained", "knowledge_differences", "knowledge_keys", "load",
    "load_for_trainer", "load_pretrained_model", "mmf_zoo_path", "model_zoo", "owns",
    "parse_key", "state_differences", "update_zoo_file", "vocabulary_parts", "zoo_path",
]
