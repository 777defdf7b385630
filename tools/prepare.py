"""Prepare real data for mmf_rec models from one data yaml.

    python tools/prepare.py --config data.yaml --out DIR

The yaml describes your tables (items, users, interactions; see
``mmf_rec/data/custom.py`` for every key) or names a built-in reader
(``format: movielens | hm | criteo`` with ``src`` and ``config``); examples are
in ``configs/prepare/``. Then train any model on DIR:

    mmf_run config=projects/kbrec/dlrm.yaml datasets=kbrec_prepared \\
        dataset_config.kbrec_prepared.data_dir=DIR

Bad rows are counted by reason in DIR/report.json and the manifest; a failed
run leaves no DIR behind. User errors print one line and exit with status 2.
"""

import argparse
import logging


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/prepare.py",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="the data yaml")
    parser.add_argument("--out", required=True, help="prepared directory to create")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from mmf_rec.data.custom import prepare_from_yaml
    from mmf_rec.data.report import DataInputError

    try:
        manifest = prepare_from_yaml(args.config, args.out)
    except (DataInputError, OSError) as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    rows = {name: entry["rows"] for name, entry in manifest["splits"].items()}
    print(f"prepared {manifest.get('name')} into {args.out}: rows {rows}; "
          f"dropped {manifest.get('dropped') or {}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
