"""What a zoo model depends on (schema, vocabularies, item knowledge, weights'
shapes), fingerprinted at export, and what differs from it at load time."""

import hashlib
import json
from typing import Any, Dict, List, Mapping


def vocabulary_parts(manifest: Mapping[str, Any], schema) -> Dict[str, str]:
    """sha256 of what gives the ids their meaning: the item table's columns
    the schema names, and the reader's vocabulary files."""
    parts = {}
    names = set(schema.sparse_names)
    for column, info in sorted(((manifest.get("items") or {}).get("files") or {}).items()):
        if column in names:
            parts[f"items/{column}"] = str(info.get("sha256"))
    vocab = manifest.get("vocab") or {}
    if vocab.get("sha256"):
        parts[str(vocab.get("path", "vocab"))] = str(vocab["sha256"])
    for name, info in sorted((vocab.get("files") or {}).items()):
        parts[f"{vocab.get('path', 'vocab')}/{name}"] = str(info.get("sha256"))
    return parts


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def data_fingerprints(schema, manifest: Mapping[str, Any], model=None) -> Dict[str, Any]:
    vocabulary = vocabulary_parts(manifest, schema)
    out = {
        "schema": {"fingerprint": schema.fingerprint(), "features": schema.to_dict()},
        "vocabulary": {"fingerprint": _digest(vocabulary), "parts": vocabulary},
    }
    knowledge = knowledge_keys(model) if model is not None else {}
    if knowledge:
        out["knowledge"] = knowledge
    return out


def knowledge_keys(model) -> Dict[str, str]:
    knowledge = getattr(model, "knowledge", None)
    if knowledge is None or not hasattr(knowledge, "items"):
        return {}
    return {name: str(getattr(module, "cache_key", None)) for name, module in knowledge.items()}


def _schema_differences(zoo: Mapping[str, Any], here: Mapping[str, Any]) -> List[str]:
    out = []
    if zoo.get("label") != here.get("label"):
        out.append(f"label '{zoo.get('label')}' in the zoo model, '{here.get('label')}' here")
    for section in ("dense", "sparse", "knowledge"):
        theirs = {f["name"]: f for f in zoo.get(section) or []}
        ours = {f["name"]: f for f in here.get(section) or []}
        missing = [n for n in theirs if n not in ours]
        extra = [n for n in ours if n not in theirs]
        if missing:
            out.append(f"{section} features {missing} of the zoo model are not in this data")
        if extra:
            out.append(f"{section} features {extra} of this data are not in the zoo model")
        for name in theirs:
            if name in ours and theirs[name] != ours[name]:
                changed = ", ".join(
                    f"{k} {theirs[name].get(k)} in the zoo model, {ours[name].get(k)} here"
                    for k in sorted(set(theirs[name]) | set(ours[name]))
                    if theirs[name].get(k) != ours[name].get(k))
                out.append(f"{section} feature '{name}': {changed}")
        common = [n for n in theirs if n in ours]
        if not missing and not extra and common != [n for n in ours if n in theirs]:
            out.append(f"{section} features are in another order: {list(theirs)} in the "
                       f"zoo model, {list(ours)} here")
    return out


def data_differences(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> List[str]:
    out = []
    zoo_schema, here_schema = recorded["schema"], current["schema"]
    if zoo_schema["fingerprint"] != here_schema["fingerprint"]:
        details = _schema_differences(zoo_schema["features"], here_schema["features"])
        out.append("schema differs: " + ("; ".join(details) or
                   f"fingerprint {zoo_schema['fingerprint']} in the zoo model, "
                   f"{here_schema['fingerprint']} here"))
    theirs, ours = recorded["vocabulary"]["parts"], current["vocabulary"]["parts"]
    if theirs != ours:
        changed = [n for n in theirs if n in ours and theirs[n] != ours[n]]
        details = []
        if changed:
            details.append(f"{changed} differ (e.g. {changed[0]}: sha256 "
                           f"{theirs[changed[0]][:12]}... in the zoo model, "
                           f"{ours[changed[0]][:12]}... here)")
        missing = [n for n in theirs if n not in ours]
        extra = [n for n in ours if n not in theirs]
        if missing:
            details.append(f"{missing} are missing here")
        if extra:
            details.append(f"{extra} are not in the zoo model")
        out.append("vocabularies differ (the same ids mean other items or values): "
                   + "; ".join(details))
    return out


def knowledge_differences(recorded: Mapping[str, Any], model) -> List[str]:
    theirs = recorded.get("knowledge") or {}
    ours = knowledge_keys(model)
    out = []
    for name in sorted(set(theirs) | set(ours)):
        if theirs.get(name) != ours.get(name):
            out.append(f"item knowledge '{name}': cache entry {theirs.get(name)} in the zoo "
                       f"model, {ours.get(name)} here (another encoder or other item data)")
    return out


def state_differences(expected: Mapping[str, Any], state: Mapping[str, Any]) -> List[str]:
    """Parameter names and shapes of the model built here vs the zoo weights."""
    def strip(sd):
        return {k[7:] if k.startswith("module.") else k: tuple(v.shape)
                for k, v in sd.items() if hasattr(v, "shape")}

    mine, theirs = strip(expected), strip(state)
    out = []
    missing = sorted(set(mine) - set(theirs))
    extra = sorted(set(theirs) - set(mine))
    shapes = [f"{k} {list(theirs[k])} in the zoo model, {list(mine[k])} here"
              for k in sorted(set(mine) & set(theirs)) if mine[k] != theirs[k]]
    if missing:
        out.append(f"{len(missing)} parameters of this model are not in the zoo weights "
                   f"(e.g. {missing[:3]})")
    if extra:
        out.append(f"{len(extra)} zoo parameters have no place in this model (e.g. {extra[:3]})")
    if shapes:
        out.append("shapes differ: " + "; ".join(shapes[:4]))
    return out


def config_differences(zoo: Any, here: Any, prefix: str = "") -> List[str]:
    if isinstance(zoo, Mapping) and isinstance(here, Mapping):
        out = []
        for k in sorted(set(zoo) | set(here), key=str):
            out += config_differences(zoo.get(k), here.get(k), f"{prefix}{k}.")
        return out
    return [] if zoo == here else [f"{prefix[:-1]}: {zoo!r} in the zoo model, {here!r} here"]
