# Over 450 lines: one clear error per bad key (jsonschema's messages rewritten as key paths, YAML positions) plus the cross-checks no schema can state; all of it is the one config gate.
"""Config validation: one clear error naming the key path, defaults filled in, cross-checks.

Snakemake's own ``validate`` reports jsonschema's raw message; users of this workflow edit
``config.yaml`` by hand, so the error must say which key is wrong (``actors.trump.videos.rally.start``)
and why, in one line, before any job runs.
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from facevae import FacevaeError

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "schemas"
SCHEMA_PATH = SCHEMA_DIR / "config.schema.yaml"


class ConfigError(FacevaeError):
    """A bad config value; ``key`` is the dotted key path."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"config error at {key or '<top level>'}: {message}")


def load_schema(path: Path | str = SCHEMA_PATH) -> dict:
    """The config schema: ``config.schema.yaml`` plus one ``<stage>.schema.yaml`` per stage beside it.

    Each stage file holds the top-level ``properties`` (and ``$defs``) of its own config section,
    so a stage's keys are documented next to each other, like its rules in ``rules/<stage>.smk``.
    """
    path = Path(path)
    with open(path) as handle:
        schema = yaml.safe_load(handle)
    for stage_file in sorted(path.parent.glob("*.schema.yaml")):
        if stage_file.resolve() == path.resolve():
            continue
        with open(stage_file) as handle:
            stage = yaml.safe_load(handle) or {}
        for section in ("properties", "$defs"):
            clash = set(stage.get(section, {})) & set(schema.get(section, {}))
            if clash:
                raise FacevaeError(f"{stage_file} redefines {section} {sorted(clash)} of {path}")
            schema.setdefault(section, {}).update(stage.get(section, {}))
    return schema


def key_path(parts) -> str:
    return ".".join(str(part) for part in parts)


def _describe(error: jsonschema.ValidationError) -> tuple[str, str]:
    """(key path, message) for the most useful reading of a jsonschema error."""
    path = list(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(error.schema.get("properties", {}))
        unknown = sorted(k for k in error.instance if k not in allowed)
        if unknown:
            hint = f" (known keys: {', '.join(sorted(allowed))})" if allowed else ""
            return key_path(path + [unknown[0]]), f"unknown key '{unknown[0]}'{hint}"
    if "propertyNames" in error.absolute_schema_path:  # a bad name: point at the name itself
        bad = error.instance
        if not isinstance(bad, str):  # `123:`, `yes:`, `null:` -- a fine name that YAML made a number, bool, ...
            return key_path(path + [bad]), f"YAML reads {_yaml_reading(bad)}; a name must be text: quote it{_as_written(bad)}"
        if error.validator == "maxLength":
            return key_path(path + [bad]), (f"'{bad[:20]}...' is {len(bad)} characters long; names are at most "
                                            f"{error.validator_value} (they become folder and file names)")
        return key_path(path + [bad]), f"'{bad}' {error.schema.get('x-error', error.message)}"
    if error.validator == "required":
        missing = re.search(r"'([^']+)' is a required property", error.message)
        name = missing.group(1) if missing else "?"
        return key_path(path + [name]), "missing required key"
    # Walk from the failing schema node up to the nearest node that carries a hand-written message.
    for node in [error.schema] + [e.schema for e in _parents(error)]:
        if isinstance(node, dict) and "x-error" in node:
            return key_path(path), f"{node['x-error']} (got {error.instance!r})"
    return key_path(path), error.message


def _yaml_reading(value) -> str:
    """How YAML 1.1 turned an unquoted key into ``value`` (for the "quote it" message)."""
    if isinstance(value, bool):
        return "yes/no/on/off/true/false as true or false"
    if value is None:
        return "null, ~ or an empty key as no value"
    if isinstance(value, (int, float)):
        return f"{value} as a number"
    if hasattr(value, "isoformat"):
        return f"{value} as a date"
    return f"this key as {type(value).__name__}"


def _as_written(value) -> str:
    if isinstance(value, bool):
        return " (e.g. 'yes':)"  # yes, on and true all read as True: the spelling is lost
    if value is None:
        return ": 'null'"
    return f": '{value.isoformat() if hasattr(value, 'isoformat') else value}'"


def _parents(error):
    parent = error.parent
    while parent is not None:
        yield parent
        parent = parent.parent


def _best_error(errors: list[jsonschema.ValidationError]) -> jsonschema.ValidationError:
    # Prefer the deepest key path: "actors.a.videos.v.start" beats "actors".
    return max(errors, key=lambda e: (len(e.absolute_path), e.validator != "oneOf"))


def _fill_defaults(instance: Any, schema: dict, root: dict) -> None:
    """Fill ``default`` values from the schema into ``instance`` in place (objects only)."""
    if "$ref" in schema:
        schema = _resolve(schema["$ref"], root)
    if not isinstance(instance, dict):
        return
    for key, sub in schema.get("properties", {}).items():
        if "$ref" in sub:
            sub = _resolve(sub["$ref"], root)
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if key in instance:
            _fill_defaults(instance[key], sub, root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key, value in instance.items():
            if key not in schema.get("properties", {}):
                _fill_defaults(value, extra, root)


def _resolve(ref: str, root: dict) -> dict:
    node = root
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return node


def check_yaml_file(path: Path | str) -> None:
    """ConfigError naming the file, line and column when ``path`` is not valid YAML (Snakemake's
    own message for a config file that does not parse names none of them), and naming the file,
    the lines and the key path when a mapping gives one key twice (YAML keeps the last one without
    a word: an actor or a video named twice was planned once, from its last entry)."""
    try:
        with open(path, encoding="utf-8") as handle:
            root = yaml.compose(handle, Loader=yaml.SafeLoader)
    except yaml.YAMLError as err:
        if _json_unique_keys(path):  # Snakemake reads JSON too (a tab YAML refuses is fine there)
            return
        mark = getattr(err, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        context = getattr(err, "context", None)
        raise ConfigError("", f"{where}: not valid YAML: {problem}" + (f" ({context})" if context else "")) from None
    except UnicodeDecodeError as err:
        raise ConfigError("", f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    if root is not None:
        _check_unique_keys(root, [], path, set())
        size = _expanded_size(root, {})
        if size > MAX_EXPANDED_NODES:
            raise ConfigError("", f"{path}: its aliases (*name) expand to {size:.3g} values, more than "
                                  f"{MAX_EXPANDED_NODES:.0e}: a config this size is a mistake or an alias bomb")


def _json_unique_keys(path) -> bool:
    """False when ``path`` is not JSON; ConfigError when a JSON object repeats a key; else True."""
    import json

    def pairs(items):
        keys = [key for key, _ in items]
        for key in keys:
            if keys.count(key) > 1:
                raise ConfigError(key, f"{path}: '{key}' is given twice in one JSON object; JSON readers keep only "
                                       "the last, silently -- merge the two entries or rename one")
        return dict(items)

    try:
        with open(path, encoding="utf-8") as handle:
            json.load(handle, object_pairs_hook=pairs)
    except (ValueError, UnicodeDecodeError):
        return False
    return True


_MERGE = "tag:yaml.org,2002:merge"
#: Values a config may expand to through aliases: every check walks the expanded tree (ten levels of
#: ten aliases each made validate() run for ever).
MAX_EXPANDED_NODES = 1_000_000


def _expanded_size(node, memo: dict) -> int:
    """How many nodes ``node`` stands for once every alias is expanded (memoised per node: linear)."""
    if id(node) in memo:
        return memo[id(node)]
    memo[id(node)] = 1  # a recursive alias counts once (PyYAML's composer refuses those anyway)
    if isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(item, memo) for item in node.value)
    else:
        size = 1
    memo[id(node)] = size
    return size


def _check_unique_keys(node, parts: list, path, seen: set) -> None:
    """ConfigError at the first mapping (depth first, in file order) that repeats a key."""
    if id(node) in seen:  # an alias: its node was checked where it was defined (and an alias bomb stays linear)
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict = {}
        constructor = yaml.SafeLoader("")
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                continue
            try:
                key = constructor.construct_object(key_node, deep=True)
                hash(key)
            except (yaml.YAMLError, TypeError):
                key = key_node.start_mark  # a mapping or list as a key: never equal to another
            if key in first:
                raise ConfigError(key_path(parts + [key]),
                                  f"{path}, line {key_node.start_mark.line + 1}: '{key}' is given twice (first on line "
                                  f"{first[key].line + 1}); YAML would keep only the last, silently -- merge the two "
                                  "entries or rename one")
            first[key] = key_node.start_mark
            _check_unique_keys(value_node, parts + [key], path, seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _check_unique_keys(item, parts + [index], path, seen)


def time_to_seconds(value: str | float | int | None) -> float | None:
    """"HH:MM:SS(.mmm)" or a number of seconds -> seconds (None stays None)."""
    if value is None or isinstance(value, (int, float)):
        return None if value is None else float(value)
    hours, minutes, seconds = value.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def validate(config: dict, schema: dict | None = None) -> dict:
    """Check ``config`` against the schema and the cross-key rules; return it with defaults.

    Raises ConfigError naming the first bad key path. ``config`` is updated in place too, so a
    Snakemake ``config`` dict can be passed directly.
    """
    schema = schema if schema is not None else load_schema()
    if config is not None and not isinstance(config, dict):
        raise ConfigError("", f"the config must be a mapping of keys (actors: ...), not a {type(config).__name__}")
    if not config:
        raise ConfigError("", "the config is empty: give --configfile or write config.yaml")
    _check_finite(config, [])
    _check_input_paths(config)
    if "actors" in config and not config["actors"]:  # `actors:` left empty: say it plainly
        raise ConfigError("actors", "no actors: add at least one actor with videos")
    _take_back_expert(config, schema)
    validator_cls = jsonschema.validators.validator_for(schema)
    errors = list(validator_cls(schema).iter_errors(config))
    if errors:
        raise ConfigError(*_describe(_best_error(errors)))
    _fill_defaults(config, schema, schema)
    _apply_expert(config)
    _check_people(config)
    _check_reenact(config)
    _check_celeba(config)
    _check_render(config)
    _check_faces(config)
    _check_train(config)
    return config


def expert_paths(schema: dict) -> list[tuple[str, ...]]:
    """The key paths the ``expert:`` block sets (``("render", "retarget", "map")``, ``("render", "score")``...):
    its keys, descended where the user's schema has an object of the same name (render.retarget)."""
    props = lambda node: (node or {}).get("properties", {})  # noqa: E731
    paths = []

    def walk(expert_node: dict, user_node: dict, path: tuple[str, ...]) -> None:
        for key, sub in props(expert_node).items():
            if key in props(user_node) and props(sub):
                walk(sub, props(user_node)[key], path + (key,))
            else:
                paths.append(path + (key,))

    for section, sub in props(props(schema).get("expert")).items():
        walk(sub, props(schema).get(section), (section,))
    return paths


def _get(config: dict, path: tuple[str, ...]):
    node = config
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return _MISSING
        node = node[key]
    return node


_MISSING = object()


def _take_back_expert(config: dict, schema: dict) -> None:
    """A research knob at its old place (``render.retarget.map``) gets one message naming its new one
    (``expert.render.retarget.map``). A config this function's :func:`_apply_expert` already resolved
    (validated twice) holds the same values in both places: those copies are taken back out."""
    expert = config.get("expert") if isinstance(config.get("expert"), dict) else None
    for path in expert_paths(schema):
        value = _get(config, path)
        if value is _MISSING:
            continue
        if expert is not None and _get(expert, path) == value:
            del _get(config, path[:-1])[path[-1]]
            continue
        raise ConfigError(key_path(list(path)), f"is an unsupported research knob now: set it as expert.{key_path(list(path))} "
                                                "(docs/config.md, section expert)")


def _apply_expert(config: dict) -> None:
    """expert.<section>.<key> -> <section>.<key> (defaults filled): the rules read one place."""
    def merge(into: dict, values: dict) -> None:
        for key, value in values.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = copy.deepcopy(value)

    for section, values in (config.get("expert") or {}).items():
        merge(config.setdefault(section, {}), values)


def _check_finite(node: Any, path: list) -> None:
    """NaN and infinity pass every JSON-schema range check (each comparison is false), then fail at
    run time -- after Snakemake has removed the job's old outputs. Stop them here."""
    if isinstance(node, float) and not math.isfinite(node):
        raise ConfigError(key_path(path), f"must be a finite number, not {node!r}")
    if isinstance(node, dict):
        for key, value in node.items():
            _check_finite(value, path + [key])
    elif isinstance(node, list):
        for index, value in enumerate(node):
            _check_finite(value, path + [index])


def _check_input_paths(config: dict) -> None:
    """Local files the rules take as inputs must not hold braces: Snakemake reads ``{...}`` in an
    input path as a wildcard and stops with a WildcardError that names no config key."""
    paths = []
    for section in ("actors", "drivers"):
        for person, entry in (config.get(section) or {}).items():
            entry = entry if isinstance(entry, dict) else {}
            for key in ("dataset", "reference"):
                paths.append((f"{section}.{person}.{key}", entry.get(key)))
            for name, video in (entry.get("videos") or {}).items():
                paths.append((f"{section}.{person}.videos.{name}.path", (video or {}).get("path") if isinstance(video, dict) else None))
    celeba = config.get("celeba") if isinstance(config.get("celeba"), dict) else {}
    paths += [(f"celeba.{key}", celeba.get(key)) for key in ("images", "attributes", "identities")]
    dfc = ((config.get("train") or {}).get("dfc") or {}) if isinstance(config.get("train"), dict) else {}
    paths.append(("train.dfc.feature_net", dfc.get("feature_net") if isinstance(dfc, dict) else None))
    for key, value in paths:
        if isinstance(value, str) and ("{" in value or "}" in value):
            raise ConfigError(key, f"the path {value} holds braces, which Snakemake reads as wildcards: rename the "
                                   "file or folder, or point to it through a symlink without braces")


def _check_people(config: dict) -> None:
    if not config.get("actors"):
        raise ConfigError("actors", "no actors: add at least one actor with videos")
    for section in ("actors", "drivers"):
        for person, entry in (config.get(section) or {}).items():
            videos = (entry or {}).get("videos") or {}
            if not videos and not (entry or {}).get("dataset"):
                role = section[:-1]
                hint = " (give videos, or a blog-format HDF5 as dataset)" if role == "actor" else ""
                raise ConfigError(f"{section}.{person}.videos", f"{role} '{person}' has no videos{hint}")
            for name, video in videos.items():
                if video.get("path") and not Path(video["path"]).is_file():
                    raise ConfigError(f"{section}.{person}.videos.{name}.path", f"local file not found: {video['path']}")
                start, end = time_to_seconds(video.get("start")), time_to_seconds(video.get("end"))
                if start is not None and end is not None and end <= start:
                    raise ConfigError(
                        f"{section}.{person}.videos.{name}.end",
                        f"end ({video['end']}) must come after start ({video['start']})",
                    )
    both = sorted(set(config.get("actors") or {}) & set(config.get("drivers") or {}))
    if both:
        raise ConfigError(
            f"drivers.{both[0]}",
            f"'{both[0]}' is both an actor and a driver: list the person once, under actors "
            "(an actor can drive another actor through reenact)",
        )
    _check_name_files(config)


# Snakemake refuses a wildcard value that ends in one substring repeated 20 times or more
# (PeriodicWildcardError, naming a rule, not the config key): "aaaaaaaaaaaaaaaaaaaa", "ab" * 20.
_PERIODIC = re.compile(r"(.+?)\1{19,}$")


def _check_name_files(config: dict) -> None:
    """Names become folder and file names: two that differ only in case are one file on macOS's
    and Windows' file systems (results/faces/Anna.h5 overwrites anna.h5); and Snakemake refuses a
    periodic one. Both are refused here, naming the key."""
    everyone: dict[str, str] = {}
    for section in ("actors", "drivers"):
        for person, entry in (config.get(section) or {}).items():
            keys = [(f"{section}.{person}", person, everyone)]
            videos: dict[str, str] = {}
            keys += [(f"{section}.{person}.videos.{name}", name, videos) for name in ((entry or {}).get("videos") or {})]
            for key, name, seen in keys:
                periodic = _PERIODIC.search(name)
                if periodic:
                    raise ConfigError(key, f"'{name}' ends in '{periodic.group(1)}' repeated "
                                           f"{len(periodic.group(0)) // len(periodic.group(1))} times, which Snakemake "
                                           "refuses as a wildcard value: rename it")
                other = seen.get(name.lower())
                if other is not None:
                    raise ConfigError(key, f"'{name}' differs from {other} only in case: on macOS and Windows both are "
                                           "one file name; rename one")
                seen[name.lower()] = key


def _check_reenact(config: dict) -> None:
    actors, drivers = set(config["actors"]), set(config.get("drivers") or {})
    for index, pair in enumerate(config.get("reenact") or []):
        if pair["actor"] not in actors:
            raise ConfigError(f"reenact.{index}.actor", f"unknown actor '{pair['actor']}' (actors: {', '.join(sorted(actors))})")
        if pair["driver"] not in drivers | actors:
            raise ConfigError(
                f"reenact.{index}.driver",
                f"unknown driver '{pair['driver']}' (drivers and actors: {', '.join(sorted(drivers | actors))})",
            )


def _check_celeba(config: dict) -> None:
    """The CelebA files must exist (a wrong path fails before any job runs)."""
    celeba = config.get("celeba")
    if not celeba:
        return
    if not Path(celeba["images"]).is_dir():
        raise ConfigError("celeba.images", f"folder not found: {celeba['images']} (the img_align_celeba images)")
    for key in ("attributes", "identities"):
        if celeba.get(key) and not Path(celeba[key]).is_file():
            raise ConfigError(f"celeba.{key}", f"file not found: {celeba[key]}")


def _check_render(config: dict) -> None:
    """Reenactment drivers need videos (their tracks); attribute edits need the celeba section."""
    for index, pair in enumerate(config.get("reenact") or []):
        entry = (config.get("actors") or {}).get(pair["driver"]) or (config.get("drivers") or {}).get(pair["driver"]) or {}
        if not entry.get("videos"):
            raise ConfigError(f"reenact.{index}.driver", f"'{pair['driver']}' has no videos to drive with (only a dataset)")
    edit = (config.get("render") or {}).get("edit") or {}
    if edit and not config.get("celeba"):
        raise ConfigError(f"render.edit.{next(iter(edit))}", "attribute edits need the celeba section (the attribute vectors come from CelebA)")


def _check_faces(config: dict) -> None:
    """Reference photos and local datasets must exist; exclude lists must name the person's videos."""
    for section in ("actors", "drivers"):
        for person, entry in (config.get(section) or {}).items():
            entry = entry or {}
            if entry.get("reference") and not Path(entry["reference"]).is_file():
                raise ConfigError(f"{section}.{person}.reference", f"reference photo not found: {entry['reference']}")
            source = entry.get("dataset")
            if source and not re.match(r"^https?://", source) and not Path(source).is_file():
                raise ConfigError(f"{section}.{person}.dataset", f"file not found: {source} (a blog-format HDF5 path or http(s) URL)")
            videos = entry.get("videos") or {}
            for video, frames in (entry.get("exclude") or {}).items():
                if video not in videos:
                    raise ConfigError(f"{section}.{person}.exclude.{video}",
                                      f"'{video}' is not one of {person}'s videos ({', '.join(sorted(videos)) or 'none'})")
                for index, item in enumerate(frames or []):
                    first, _, last = str(item).partition("-")
                    if last and int(last) < int(first):  # it excluded nothing, silently
                        raise ConfigError(f"{section}.{person}.exclude.{video}.{index}",
                                          f"the range '{item}' runs backwards: write first-last, e.g. '{last}-{first}'")


def _check_train(config: dict) -> None:
    """dfc needs a feature network: a TorchScript file, or CelebA to train one (with enough layers)."""
    train = config.get("train") or {}
    if train.get("model") != "dfc":
        return
    dfc = train.get("dfc") or {}
    if dfc.get("feature_net"):
        if not Path(dfc["feature_net"]).is_file():
            raise ConfigError("train.dfc.feature_net", f"file not found: {dfc['feature_net']} (a TorchScript feature network)")
        return
    if not config.get("celeba"):
        raise ConfigError("train.dfc.feature_net", "train.model dfc needs a feature network: name a TorchScript file here, "
                          "or add the celeba section so the workflow trains one on CelebA's attributes")
    layers = (config.get("featurenet") or {}).get("layers", 3)
    if len(dfc.get("layer_weights") or []) > layers:
        raise ConfigError("train.dfc.layer_weights", f"{len(dfc['layer_weights'])} weights but featurenet.layers keeps only {layers} feature maps")


def people(config: dict) -> dict[str, dict]:
    """Every person (actors and drivers) by name, with their ``role``."""
    found = {}
    for section in ("actors", "drivers"):
        for person, entry in (config.get(section) or {}).items():
            found[person] = {"role": section[:-1], **entry}
    return found


def video_entry(config: dict, person: str, video: str) -> dict:
    """The config entry of one video, with start/end as seconds and where it came from."""
    entry = people(config)[person]
    spec = dict(entry["videos"][video])
    return {
        "person": person,
        "role": entry["role"],
        "video": video,
        "url": spec.get("url"),
        "path": spec.get("path"),
        "start": time_to_seconds(spec.get("start")),
        "end": time_to_seconds(spec.get("end")),
    }


def main(argv=None) -> int:
    """``python -m facevae.config FILE...``: check config files as ``snakemake --configfile FILE...``
    would read them (YAML syntax with file, line and column; keys given twice; the merged config
    against the schema). Snakemake stops at a --configfile that does not parse before the
    Snakefile runs, with a message that names no file: this names it."""
    import sys

    paths = list(sys.argv[1:] if argv is None else argv) or ["config.yaml"]
    try:
        merged: dict = {}
        for path in paths:
            if not Path(path).is_file():
                raise ConfigError("", f"{path}: file not found")
            check_yaml_file(path)
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
            try:  # as Snakemake reads it: JSON first, then YAML
                import json

                loaded = json.loads(text)
            except ValueError:
                loaded = yaml.safe_load(text)
            if not isinstance(loaded, dict):
                raise ConfigError("", f"{path}: the top level must be a mapping of keys (actors: ...), not "
                                      f"{type(loaded).__name__}")
            _merge_into(merged, loaded)
        validate(merged)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 1
    print(f"{', '.join(paths)}: OK")
    return 0


def _merge_into(into: dict, new: dict) -> None:
    """Snakemake's update_config: nested mappings merge, anything else replaces."""
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge_into(into[key], value)
        else:
            into[key] = value


if __name__ == "__main__":
    raise SystemExit(main())
