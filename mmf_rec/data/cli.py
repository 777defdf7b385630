"""The command line every reader and the generator share: one flag per field
of the config dataclass, so a new config field is a new flag."""

import argparse
import logging
from dataclasses import fields
from typing import Callable, List, Optional


def add_config_flags(parser: argparse.ArgumentParser, config_cls) -> None:
    """``--<field-name>`` for each field, typed and defaulted like the field."""
    defaults = config_cls()
    for f in fields(config_cls):
        parser.add_argument("--" + f.name.replace("_", "-"),
                            type=type(getattr(defaults, f.name)),
                            default=getattr(defaults, f.name))


def reader_main(argv: Optional[List[str]], *, prog: str, description: str, src_help: str,
                config_cls, prepare: Callable) -> int:
    """``--src``, ``--out`` and the config's flags -> ``prepare(src, out, config)``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--src", required=True, help=src_help)
    parser.add_argument("--out", required=True, help="directory to create")
    add_config_flags(parser, config_cls)
    args = vars(parser.parse_args(argv))
    src, out = args.pop("src"), args.pop("out")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        prepare(src, out, config_cls.from_mapping(args, source="arguments"))
    except (ValueError, OSError) as e:  # bad input or config: a message, not a traceback
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    return 0
