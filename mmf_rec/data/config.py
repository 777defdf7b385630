"""Reader and generator configs: frozen dataclasses read from a yaml section or flags.

Every real-data reader and the synthetic generator take their options the
same way, so one parser gives them one set of rules: an unknown key is an
error that lists the known ones, each value must fit its field's type, and
then the dataclass checks its values (its ``validate(source)``). Errors name
``<source>.<key>``, so a user finds the line to fix.
"""

import datetime
from dataclasses import fields
from typing import Any, Callable, Mapping, Optional, Sequence, Type, TypeVar, Union

C = TypeVar("C")


def config_from_mapping(cls: Type[C], data: Optional[Mapping[str, Any]], source: str,
                        error: Type[Exception], ignore: Sequence[str] = ()) -> C:
    """``cls`` from ``data`` (None: the defaults), every value checked against
    its field's type; the keys in ``ignore`` (a version a manifest records
    beside the config) are dropped first."""
    data = {key: value for key, value in dict(data or {}).items() if key not in ignore}
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise error(f"{source}: unknown keys {unknown}; expected some of {sorted(known)}")
    defaults = cls()
    values = {key: _typed(value, type(getattr(defaults, key)), f"{source}.{key}", error)
              for key, value in data.items()}
    config = cls(**values)
    config.validate(source)
    return config


def _typed(value: Any, kind: type, where: str, error: Type[Exception]) -> Any:
    """``value`` as a ``kind``: bools only for bool fields, whole numbers for
    int ones, and text (or a date, which yaml reads 2020-09-01 as) for str ones."""
    if kind is bool or isinstance(value, bool):
        ok, converted = kind is bool and isinstance(value, bool), value
    elif kind is str:
        ok = isinstance(value, (str, datetime.date))
        converted = str(value)
    else:
        try:
            converted = kind(value)
            ok = kind is float or float(value) == converted
        except (TypeError, ValueError):
            ok = False
    if not ok:
        raise error(f"{where}: expected {kind.__name__}, got {value!r}")
    return converted


def as_config(cls: Type[C], config: Union[C, Mapping[str, Any], None],
              ignore: Sequence[str] = ()) -> C:
    """``config`` checked as it is, or read from a mapping with ``cls.from_mapping``."""
    if isinstance(config, cls):
        config.validate()
        return config
    data = {key: value for key, value in dict(config or {}).items() if key not in ignore}
    return cls.from_mapping(data)


def requirement(config: Any, source: str, error: Type[Exception]
                ) -> Callable[[bool, str, str], None]:
    """``need(ok, key, expected)`` for a ``validate``: unless ``ok``, raise
    ``error`` naming the key, what it should be and the value it has."""
    def need(ok: bool, key: str, expected: str) -> None:
        if not ok:
            raise error(f"{source}.{key}: expected {expected}, got {getattr(config, key)!r}")

    return need
