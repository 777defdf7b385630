#!/usr/bin/env python3
"""Publish a trained run in mmf_rec's model zoo.

    python tools/export_zoo.py --run save/kbrec_synthetic/dlrm --key kbrec.dlrm.synthetic

packages the run's config, its best weights (``--checkpoint current`` for the
last ones) and fingerprints of the data it was trained on (schema,
vocabularies, item knowledge cache) into ``<out>/<key>.tar.gz`` (MMF's zoo
layout, with its sha256), and adds or updates ``<key>`` in mmf_rec's zoo file
(``configs/zoo/models.yaml``, or ``--zoo FILE``). Load it back with
``mmf_run config=... checkpoint.resume_zoo=<key> run_type=test`` or
``registry.get_model_class(<model>).from_pretrained(<key>)``; with ``--zoo``,
set ``MMF_REC_MODEL_ZOO=FILE`` for those.

    python tools/export_zoo.py --bundle --key kbrec.pipeline.synthetic \
        --retriever save/kbrec_synthetic/two_tower --ranker save/kbrec_synthetic/dlrm_mm

publishes a whole retrieve-then-rank pipeline (retriever, its index, ranker)
under one key, for ``tools/recommend.py --zoo kbrec.pipeline.synthetic``.
"""

import argparse
import json
import os
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", help="the run's env.save_dir")
    parser.add_argument("--key", required=True,
                        help="kbrec.<model>.<name>, or kbrec.pipeline.<name> with --bundle")
    parser.add_argument("--bundle", action="store_true",
                        help="publish a pipeline: --retriever, --index and --ranker")
    parser.add_argument("--retriever", help="two_tower run dir (with --bundle)")
    parser.add_argument("--index", help="index directory (with --bundle; default "
                                        "<retriever>/index)")
    parser.add_argument("--ranker", help="dlrm_mm run dir (with --bundle; optional)")
    parser.add_argument("--out", default=None,
                        help="directory for the archive (default: <run>/zoo)")
    parser.add_argument("--zoo", default=None,
                        help="zoo file to update (default: $MMF_REC_MODEL_ZOO or "
                             "mmf_rec's configs/zoo/models.yaml)")
    parser.add_argument("--checkpoint", choices=("best", "current"), default="best")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="load a checkpoint that needs a full unpickle (it runs code "
                             "stored in the file: only for files you trust)")
    args = parser.parse_args(argv)
    if args.bundle and not args.retriever:
        parser.error("--bundle needs --retriever (and --index, --ranker)")
    if not args.bundle and not args.run:
        parser.error("--run is required (or --bundle with --retriever)")

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import mmf  # noqa: F401  (the shims, mmf_rec's hooks and registrations)

    from mmf_rec import zoo

    try:
        if args.bundle:
            index = args.index or os.path.join(args.retriever, "index")
            result = zoo.export_bundle(args.key, args.retriever, index, args.ranker,
                                       out_dir=args.out, zoo_file=args.zoo,
                                       allow_pickle=args.allow_pickle)
        else:
            result = zoo.export(args.run, args.key, out_dir=args.out, zoo_file=args.zoo,
                                checkpoint=args.checkpoint, allow_pickle=args.allow_pickle)
    except (zoo.ZooError, ValueError, OSError) as e:
        print(f"export_zoo: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: result[k] for k in ("key", "archive", "sha256", "zoo_file")},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
