"""Unit tests of the config contract: defaults, and one error naming the key path."""

import copy

import pytest
import yaml

from facevae.config import ConfigError, time_to_seconds, validate, video_entry
from support.media import REPO
from support.timeouts import hang_guard

URL = "https://example.org/a.mp4"


def base():
    return {
        "actors": {"trump": {"videos": {"rally": {"url": URL, "start": "00:01:00", "end": "00:02:30.5"}}}},
        "drivers": {"me": {"videos": {"webcam": {"url": URL}}}},
    }


def error_of(config) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        validate(config)
    return info.value


def test_default_config_is_valid_and_gets_defaults():
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    validate(config)
    assert set(config["actors"]) == {"d6", "d10"} and set(config["drivers"]) == {"tpsmm"}
    assert config["download"]["retries"] == 3


def test_valid_config_entry_in_seconds():
    config = validate(base())
    entry = video_entry(config, "trump", "rally")
    assert entry == {"person": "trump", "role": "actor", "video": "rally", "url": URL, "path": None, "start": 60.0, "end": 150.5}


@pytest.mark.parametrize(
    "mutate, key, words",
    [
        (lambda c: c["actors"]["trump"]["videos"]["rally"].update(stat="1"), "actors.trump.videos.rally.stat", "unknown key 'stat'"),
        (lambda c: c.update(actorz={}), "actorz", "unknown key"),
        (lambda c: c["actors"]["trump"]["videos"]["rally"].update(start="1:2"), "actors.trump.videos.rally.start", "bad time format"),
        (lambda c: c["actors"]["trump"]["videos"]["rally"].update(end="00:00:30"), "actors.trump.videos.rally.end", "must come after start"),
        (lambda c: c["actors"]["trump"]["videos"]["rally"].pop("url"), "actors.trump.videos.rally", "exactly one of 'url' or 'path'"),
        (lambda c: c["actors"]["trump"]["videos"]["rally"].update(path="/x.mp4"), "actors.trump.videos.rally", "exactly one of 'url' or 'path'"),
        (lambda c: c["actors"]["trump"]["videos"]["rally"].update(url="ftp://x/y"), "actors.trump.videos.rally.url", "http(s) URL"),
        (lambda c: c["actors"].update({"no videos": {"videos": {}}}), "actors.no videos", "must be a name"),
        (lambda c: c["actors"].update(empty={"videos": {}}), "actors.empty.videos", "actor 'empty' has no videos"),
        (lambda c: c["actors"].update(empty={}), "actors.empty.videos", "has no videos"),
        (lambda c: c["drivers"].update(trump={"videos": {"x": {"url": URL}}}), "drivers.trump", "both an actor and a driver"),
        (lambda c: c.update(reenact=[{"actor": "obama", "driver": "me"}]), "reenact.0.actor", "unknown actor 'obama'"),
        (lambda c: c.update(reenact=[{"actor": "trump", "driver": "you"}]), "reenact.0.driver", "unknown driver 'you'"),
        (lambda c: c["actors"]["trump"]["videos"]["rally"].update(url=None, path="/no/such/file.mp4") or c["actors"]["trump"]["videos"]["rally"].pop("url"),
         "actors.trump.videos.rally.path", "local file not found"),
        (lambda c: c.pop("actors"), "actors", "missing required key"),
        # issue 15: values that passed the schema and failed at run time, after Snakemake had
        # removed the job's old outputs; and `actors:` left empty (was jsonschema's raw wording).
        (lambda c: c.update(train={"lr": float("nan")}), "train.lr", "must be a finite number, not nan"),
        (lambda c: c.update(train={"beta": float("inf")}), "train.beta", "must be a finite number, not inf"),
        (lambda c: c.update(render={"retarget": {"gain": float("nan")}}), "render.retarget.gain", "finite number"),
        (lambda c: c.update(render={"retarget": {"mouth_points": "mesh"}}), "render.retarget.mouth_points",
         "must be faceapi or dlib"),
        (lambda c: c.update(expert={"render": {"self_blend": 1.5}}), "expert.render.self_blend", "must be a number in [0, 1]"),
        (lambda c: c.update(expert={"train": {"appearance_jitter": "yes"}}), "expert.train.appearance_jitter", "must be true or false"),
        (lambda c: c.update(expert={"render": {"self_transfer": "video"}}), "expert.render.self_transfer", "must be encoder or a number in [0, 1]"),
        (lambda c: c.update(expert={"render": {"self_transfer": -0.5}}), "expert.render.self_transfer", "must be encoder or a number in [0, 1]"),
        (lambda c: c.update(expert={"render": {"retarget": {"brow_weight": 2}}}), "expert.render.retarget.brow_weight", "must be a number in [0, 1]"),
        (lambda c: c.update(expert={"render": {"retarget": {"eye_keeps_mouth": "yes"}}}), "expert.render.retarget.eye_keeps_mouth",
         "must be true or false"),
        (lambda c: c.update(render={"drive": "mix"}), "render.drive", "must be auto, retarget, encoder or blend"),
        (lambda c: c.update(actors=None), "actors", "no actors: add at least one actor"),
        (lambda c: c.update(actors={}), "actors", "no actors: add at least one actor"),
        (lambda c: c["actors"]["trump"]["videos"]["rally"].pop("url") and c["actors"]["trump"]["videos"]["rally"].update(
            path="/data/{take}/rally.mp4"), "actors.trump.videos.rally.path", "holds braces, which Snakemake reads as wildcards"),
        (lambda c: c["actors"]["trump"].update(reference="/photos/{me}.png"), "actors.trump.reference", "holds braces"),
    ],
)
def test_config_error_names_the_key(mutate, key, words):
    config = base()
    mutate(config)
    err = error_of(config)
    assert err.key == key, str(err)
    assert words in str(err)
    assert str(err).startswith(f"config error at {key}:")


def test_reenact_may_pair_two_actors():
    config = base()
    config["actors"]["obama"] = copy.deepcopy(config["actors"]["trump"])
    config["reenact"] = [{"actor": "trump", "driver": "obama"}]
    validate(config)


@pytest.mark.parametrize("value, seconds", [("00:00:10", 10.0), ("1:02:03.25", 3723.25), (5400, 5400.0), (2.5, 2.5), (None, None)])
def test_time_to_seconds(value, seconds):
    assert time_to_seconds(value) == seconds


def test_yaml_sexagesimal_time_is_seconds():
    # YAML 1.1 reads an unquoted 1:30:00 as the integer 5400: that is still the right time.
    config = yaml.safe_load(f"actors: {{a: {{videos: {{v: {{url: '{URL}', start: 1:30:00}}}}}}}}")
    assert video_entry(validate(config), "a", "v")["start"] == 5400.0


def test_yaml_syntax_error_names_file_line_and_column(tmp_path):
    """Snakemake's own message ("Config file is not valid JSON or YAML") named none of them."""
    import subprocess
    import sys
    from pathlib import Path

    from facevae.config import check_yaml_file

    bad = tmp_path / "config.yaml"
    bad.write_text('actors:\n  a:\n    videos: {v: {url: "https://x/y.mp4"}\n  b: [\n')
    with pytest.raises(ConfigError, match=r"config.yaml, line 4, column 3: not valid YAML: expected ',' or '}'"):
        check_yaml_file(bad)
    run = subprocess.run([Path(sys.executable).parent / "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory",
                          str(tmp_path), "-n"], capture_output=True, text=True, timeout=hang_guard(120))
    assert run.returncode != 0 and "config.yaml, line 4, column 3: not valid YAML" in run.stdout + run.stderr


@pytest.mark.parametrize("text, key, lines", [
    # an actor named twice: only the second was planned, silently
    ('actors:\n  a:\n    videos: {v: {url: "https://x/y.mp4"}}\n  a:\n    videos: {w: {url: "https://x/z.mp4"}}\n',
     "actors.a", (2, 4)),
    # a video named twice inside one actor (block style)
    ('actors:\n  a:\n    videos:\n      v: {url: "https://x/y.mp4"}\n      v: {url: "https://x/z.mp4"}\n',
     "actors.a.videos.v", (4, 5)),
    # a top-level section twice
    ('actors: {a: {videos: {v: {url: "https://x/y.mp4"}}}}\ntrain: {epochs: 3}\ntrain: {epochs: 5}\n', "train", (2, 3)),
    # flow style, same line
    ('actors: {a: {videos: {v: {url: "https://x/y.mp4", url: "https://x/z.mp4"}}}}\n', "actors.a.videos.v.url", (1, 1)),
], ids=["actor", "video", "section", "flow-key"])
def test_a_key_given_twice_is_refused_with_file_and_lines(tmp_path, text, key, lines):
    """YAML keeps the last of two equal keys without a word (issue 39, item 3)."""
    from facevae.config import check_yaml_file

    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        check_yaml_file(path)
    assert err.value.key == key
    assert f"{path}, line {lines[1]}: '{key.rsplit('.', 1)[-1]}' is given twice (first on line {lines[0]})" in str(err.value)


def test_merge_keys_and_equal_names_in_different_mappings_are_not_duplicates(tmp_path):
    from facevae.config import check_yaml_file

    path = tmp_path / "config.yaml"
    path.write_text('base: &v {url: "https://x/y.mp4"}\nactors:\n  a: {videos: {v: {<<: *v, start: 1}}}\n'
                    '  b: {videos: {v: {<<: *v, url: "https://x/z.mp4"}}}\n')
    check_yaml_file(path)  # no error: an explicit key beside a merge overrides it by design


@pytest.mark.slow  # a real Snakemake run
@pytest.mark.parametrize("where", ["config.yaml", "--configfile"])
def test_snakemake_refuses_a_duplicate_key_in_every_config_file(tmp_path, where):
    import subprocess
    import sys
    from pathlib import Path

    text = ('actors:\n  a:\n    videos: {v: {url: "https://example.org/y.mp4"}}\n'
            '  a:\n    videos: {w: {url: "https://example.org/z.mp4"}}\n')
    work = tmp_path / "work"
    work.mkdir()
    args = []
    if where == "config.yaml":
        path = work / "config.yaml"
    else:
        (work / "config.yaml").write_text('actors: {d: {videos: {v: {url: "https://example.org/y.mp4"}}}}\n')
        path = tmp_path / "mine.yaml"
        args = ["--configfile", str(path)]
    path.write_text(text)
    run = subprocess.run([Path(sys.executable).parent / "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory",
                          str(work), "-n", *args], capture_output=True, text=True, timeout=hang_guard(120))
    output = run.stdout + run.stderr
    assert run.returncode != 0, output[-2000:]
    assert "config error at actors.a: " in output and "line 4: 'a' is given twice (first on line 2)" in output, output[-2000:]


def test_a_configfile_that_does_not_parse_is_named_by_the_checker(tmp_path):
    """Snakemake parses --configfile before the Snakefile runs ("Config file is not valid JSON or
    YAML", no file, line or column): `python -m facevae.config FILE` names all three."""
    import os
    import subprocess
    import sys

    bad = tmp_path / "mine.yaml"
    bad.write_text('actors:\n  a:\n    videos: {v: {url: "https://x/y.mp4"}\n  b: [\n')
    good = tmp_path / "good.json"
    good.write_text('{"actors":\t{"a": {"videos": {"v": {"url": "https://example.org/y.mp4"}}}}}')
    run = subprocess.run([sys.executable, "-m", "facevae.config", str(good), str(bad)], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO / "workflow")}, timeout=hang_guard(60))
    assert run.returncode == 1 and f"{bad}, line 4, column 3: not valid YAML" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr
    run = subprocess.run([sys.executable, "-m", "facevae.config", str(good)], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO / "workflow")}, timeout=hang_guard(60))
    assert run.returncode == 0 and "OK" in run.stdout, run.stderr


def test_a_json_configfile_with_a_key_twice_is_refused(tmp_path):
    from facevae.config import check_yaml_file

    path = tmp_path / "c.json"
    path.write_text('{"actors":\t{"a": {"videos": {}}, "a": {"videos": {}}}}')
    with pytest.raises(ConfigError, match=r"c.json: 'a' is given twice in one JSON object"):
        check_yaml_file(path)


def _long_name(n: int, seed: int) -> str:
    import random

    rng = random.Random(seed)  # not periodic: Snakemake refuses a wildcard that repeats a substring 20 times
    return rng.choice("abcdefgh") + "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789_-") for _ in range(n - 1))


def test_a_name_too_long_for_its_file_names_is_refused_with_the_limit():
    """A 230-character video name passed and crashed at the end of the render (a temporary file
    name over 255 bytes). Issue 39, item 6."""
    for where in ("actor", "video"):
        config = base()
        name = _long_name(230, 1)
        if where == "actor":
            config["actors"][name] = config["actors"].pop("trump")
            key = f"actors.{name}"
        else:
            config["actors"]["trump"]["videos"][name] = config["actors"]["trump"]["videos"].pop("rally")
            key = f"actors.trump.videos.{name}"
        err = error_of(config)
        assert err.key == key and "is 230 characters long; names are at most 100" in str(err), str(err)


@pytest.mark.slow  # a real Snakemake dry run
def test_every_file_name_made_from_the_longest_names_fits(tmp_path):
    """Every output of a dry run with 100-character names, as the temporary its writer makes
    beside it (facevae.atomic.temp_path with the largest pid; the trackers' and ingest's
    mkdtemp folders), stays within 255 bytes."""
    import subprocess
    import sys
    from pathlib import Path

    actor, driver, video = (_long_name(100, seed) for seed in (2, 3, 4))
    config = {"actors": {actor: {"videos": {video: {"url": URL}}}}, "drivers": {driver: {"videos": {video: {"url": URL}}}},
              "render": {"paste_back": True}}
    validate(copy.deepcopy(config))
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    run = subprocess.run([Path(sys.executable).parent / "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory",
                          str(tmp_path), "--configfile", str(tmp_path / "c.yaml"), "-n"], capture_output=True, text=True,
                         timeout=hang_guard(120))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    outputs = [p.strip() for line in run.stdout.splitlines() if line.strip().startswith("output:")
               for p in line.split("output:", 1)[1].split(",")]
    assert any(video in p and p.endswith(".expression.png") for p in outputs)
    longest = 0
    for output in outputs:
        name = Path(output).name
        temporaries = [f".{name}.4194304.tmp{Path(name).suffix}", f".{Path(name).stem}.abcdefgh.blocks",
                       f".{Path(name).stem}.abcdefgh.tmp"]
        longest = max(longest, *(len(t.encode()) for t in temporaries), *(len(part.encode()) for part in Path(output).parts))
    assert longest <= 255, longest


@pytest.mark.parametrize("text, shown, reading", [
    ("123", "123", "a number"), ("1.5", "1.5", "a number"), ("yes", "True", "true or false"),
    ("off", "False", "true or false"), ("null", "None", "no value"), ("2024-01-02", "2024-01-02", "a date"),
])
def test_a_name_yaml_reads_as_something_else_says_quote_it(text, shown, reading):
    """`123:` got "must be a name of letters, digits..." -- it is one; YAML made it a number."""
    config = yaml.safe_load(f"actors:\n  {text}:\n    videos: {{v: {{url: '{URL}'}}}}\n")
    err = error_of(config)
    assert err.key == f"actors.{shown}", str(err)
    assert "YAML reads " in str(err) and f" as {reading}" in str(err) and "quote it" in str(err), str(err)
    if reading != "true or false":  # yes/on/true all read as True: the message cannot know which was written
        assert f"quote it: '{text}'" in str(err), str(err)


@pytest.mark.parametrize("mutate, key, words", [
    (lambda c: c["actors"].update({"z" * 20: c["actors"]["trump"]}), "actors." + "z" * 20, "repeated 20 times"),
    (lambda c: c["actors"].update({"ab" * 10 + "x" + "yz" * 20: c["actors"]["trump"]}), "actors." + "ab" * 10 + "x" + "yz" * 20,
     "ends in 'yz' repeated 20 times"),
    (lambda c: c["drivers"].update({"Trump": {"videos": {"x": {"url": URL}}}}), "drivers.Trump", "differs from actors.trump only in case"),
    (lambda c: c["actors"]["trump"]["videos"].update({"Rally": {"url": URL}}), "actors.trump.videos.Rally",
     "differs from actors.trump.videos.rally only in case"),
    (lambda c: c["actors"]["trump"].update(exclude={"rally": [4, -3]}), "actors.trump.exclude.rally.1",
     "must be a frame number (0 or more)"),
], ids=["periodic", "periodic-pair", "case-person", "case-video", "exclude-negative"])
def test_second_pass_name_and_frame_cases(mutate, key, words):
    """Extra hostile cases of issue 39's second pass: a periodic name (Snakemake's
    PeriodicWildcardError named a rule), names equal but for case (one file on macOS/Windows),
    jsonschema's raw 'not valid under any of the given schemas' for a negative frame."""
    config = base()
    mutate(config)
    err = error_of(config)
    assert err.key == key and words in str(err), str(err)


def test_a_config_that_is_not_a_mapping_or_an_alias_bomb_is_refused(tmp_path):
    from facevae.config import check_yaml_file

    with pytest.raises(ConfigError, match="must be a mapping of keys"):
        validate(["actors"])
    levels = "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8))
    path = tmp_path / "bomb.yaml"
    path.write_text(levels + "actors: {a: {videos: {v: {url: 'https://example.org/a.mp4'}}}}\n")
    with pytest.raises(ConfigError, match=r"bomb.yaml: its aliases \(\*name\) expand to 1.23e\+09 values"):
        check_yaml_file(path)  # validate() walked all 10^9 values (it ran for ever)


def test_research_knobs_live_under_expert_and_set_their_section():
    """Issue 35's tiered config: a research knob set under expert: reaches the key the rules read;
    at its old place it gets one error naming the new one; validating a resolved config again
    (the Snakefile's config after a rule's own check) changes nothing."""
    import copy

    from facevae.config import expert_paths, load_schema

    paths = expert_paths(load_schema())
    assert ("render", "retarget", "map") in paths and ("train", "lr_schedule") in paths and ("render", "score") in paths
    assert ("render", "retarget", "transfer") not in paths  # a user's key stays where it was
    config = validate({**base(), "expert": {"render": {"retarget": {"map": "nadaraya"}, "self_blend": 0.25}}})
    assert config["render"]["retarget"]["map"] == "nadaraya" and config["render"]["self_blend"] == 0.25
    assert config["render"]["retarget"]["transfer"] == 0.75 and config["train"]["lr_schedule"] == "constant"
    assert validate(copy.deepcopy(config)) == config
    for section, where in (({"render": {"retarget": {"map": "nadaraya"}}}, "render.retarget.map"),
                           ({"train": {"lr_schedule": "cosine"}}, "train.lr_schedule"),
                           ({"render": {"score": {"permutations": 10}}}, "render.score")):
        with pytest.raises(ConfigError, match=rf"{where}: is an unsupported research knob now: set it as expert\.{where}"):
            validate({**base(), **section})
