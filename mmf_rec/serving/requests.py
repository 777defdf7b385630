"""What a client may send, checked before anything runs: every refusal is a
:class:`RequestError` (a 4xx) whose message names the field.

- query parameters: only those the route takes, each given once, integers
  in their bounds;
- a JSON body: at most ``max_body`` bytes of UTF-8, no NaN or Infinity, no
  number that overflows a float, nesting that Python's parser can follow;
  then the :class:`NewUser` model (unknown fields refused, types strict);
- a form body: the same fields, as text.
Feature values themselves (names, ranges) are the engine's to check, since
it knows the schema.
"""

import json
import math
import re
import urllib.parse
from typing import Any, Dict, List, Mapping, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr
from pydantic import ValidationError

from mmf_rec.serving.engine import RequestError

_INTEGER = re.compile(r"[+-]?\d{1,18}")
TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")
# fields of POST /recommend besides the features (a flat form sends features
# as fields of their own)
BODY_FIELDS = ("features", "history", "k", "exclude_seen")

Scalar = Union[StrictInt, StrictFloat, StrictStr, None]


class NewUser(BaseModel):
    """POST /recommend: a new user's features, history and k."""

    model_config = ConfigDict(extra="forbid")

    features: Dict[StrictStr, Scalar] = Field(default_factory=dict, max_length=1000)
    history: Union[List[StrictInt], StrictStr] = Field(default_factory=list, max_length=1000)
    k: Union[StrictInt, StrictStr] = 10
    exclude_seen: Union[StrictBool, StrictStr, StrictInt] = True


# -- query parameters ------------------------------------------------------------------------
def query_args(query_string: Union[bytes, str],
               allowed: Optional[Mapping[str, str]]) -> Dict[str, str]:
    """The query's parameters as {name: value}; ``allowed`` maps each
    parameter the route takes to how to write it, for the error message
    (None: any name)."""
    if isinstance(query_string, bytes):
        try:
            query_string = query_string.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError("the query string is not UTF-8") from None
    try:
        pairs = urllib.parse.parse_qsl(query_string, keep_blank_values=True, strict_parsing=False,
                                       max_num_fields=50)
    except ValueError as error:
        raise RequestError(f"malformed query string: {error}") from None
    out: Dict[str, str] = {}
    for name, value in pairs:
        if allowed is not None and name not in allowed:
            takes = ", ".join(allowed.values()) or "no parameters"
            raise RequestError(f"unknown query parameter '{name[:40]}'; this route takes {takes}")
        if name in out:
            raise RequestError(f"query parameter '{name}' given more than once")
        out[name] = value
    return out


def integer(value: Any, name: str, low: Optional[int] = None, high: Optional[int] = None) -> int:
    """An integer field within [low, high], from JSON or text."""
    if isinstance(value, bool):
        raise RequestError(f"'{name}' must be an integer, got {value!r}")
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, str):
        text = value.strip()
        if not _INTEGER.fullmatch(text):
            raise RequestError(f"'{name}' must be an integer, got {text[:40]!r}")
        value = int(text)
    if not isinstance(value, int):
        raise RequestError(f"'{name}' must be an integer, got {str(value)[:40]!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = (f"in [{low}, {high}]" if low is not None and high is not None
                  else f">= {low}" if low is not None else f"<= {high}")
        raise RequestError(f"'{name}' must be {bounds}, got {value}")
    return value


def flag(value: Any, name: str, default: bool) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in TRUE + FALSE:
        return value.lower() in TRUE
    raise RequestError(f"'{name}' must be true or false, got {str(value)[:40]!r}")


# -- bodies ----------------------------------------------------------------------------------
def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise RequestError(f"the number {text[:40]} overflows a float")
    return number


def _no_constant(name: str):
    raise RequestError(f"{name} is not a number a request may give")


def parse_json(body: bytes) -> Any:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError("the body is not UTF-8") from None
    try:
        return json.loads(text or "{}", parse_float=_finite, parse_constant=_no_constant)
    except RecursionError:
        raise RequestError("the JSON body nests too deeply") from None
    except json.JSONDecodeError as error:
        raise RequestError(f"malformed JSON body: {error}") from None
    except ValueError as error:  # e.g. an integer of more digits than Python converts
        raise RequestError(f"malformed JSON body: {error}") from None


def new_user(body: bytes, content_type: Optional[str]) -> NewUser:
    """The POST /recommend body as a :class:`NewUser`, JSON or form."""
    kind = (content_type or "application/json").split(";")[0].strip().lower()
    if kind == "application/json":
        data = parse_json(body)
        if not isinstance(data, dict):
            raise RequestError("the JSON body must be an object: "
                               '{"features": {...}, "history": [...], "k": 10}')
    elif kind == "application/x-www-form-urlencoded":
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError("the body is not UTF-8") from None
        fields = query_args(text, None)  # any name: the others are features
        data = {name: fields[name] for name in BODY_FIELDS if name in fields}
        data["features"] = {k: v for k, v in fields.items() if k not in BODY_FIELDS}
    else:
        raise RequestError(f"unsupported Content-Type {kind[:60]}; send application/json or "
                           "application/x-www-form-urlencoded", 415)
    try:
        return NewUser.model_validate(data)
    except ValidationError as error:
        raise RequestError(_describe(error)) from None


EXPECTED = {
    "features": "an object of feature name -> number, string or null",
    "history": "a list of item ids (integers), or a string of ids separated by commas",
    "k": "an integer",
    "exclude_seen": "true or false",
}


def _describe(error: ValidationError) -> str:
    """pydantic's errors as one clause per field, naming it: an unknown
    field, or what the field must be (a feature by its name)."""
    clauses: List[str] = []
    for e in error.errors(include_url=False):
        loc = [str(p) for p in e["loc"]]
        if e["type"] == "extra_forbidden":
            clause = (f"unknown field '{loc[0][:40]}'; the body takes "
                      f"{', '.join(BODY_FIELDS)}")
        elif loc[0] == "features" and len(loc) > 1:
            clause = f"feature '{loc[1][:40]}' must be a number, a string or null"
        elif loc[0] == "history" and len(loc) > 2:
            clause = f"'history' must be {EXPECTED['history']}; item {loc[2]} is not an integer"
        elif e["type"] == "too_long":
            clause = f"'{loc[0]}' {e['msg'].lower()}"
        else:
            clause = f"'{loc[0]}' must be {EXPECTED.get(loc[0], e['msg'].lower())}"
        if clause not in clauses:
            clauses.append(clause)
    return "; ".join(clauses)
