"""Outputs are staged and promoted atomically; a failed run leaves nothing in the managed folder."""

from __future__ import annotations

import os

import pytest

from dss_airflow.config.loader import load_catalog
from dss_airflow.errors import ConfigError
from dss_airflow.staging import (
    discard_staging,
    plan_inputs,
    plan_outputs,
    promote_outputs,
    validate_folder_refs,
)
from tests.helpers import BASE_CONFIG, leftover_staging, write_config


@pytest.fixture
def catalog(tmp_path):
    write_config(tmp_path, {"c.yaml": BASE_CONFIG})
    return load_catalog(tmp_path)


def test_promote_moves_files_and_keeps_existing_ones(catalog, tmp_path):
    (out,) = plan_outputs(catalog, {"o": "out/reports"}, run_key="k")
    out.host_destination.mkdir(parents=True)
    (out.host_destination / "old.txt").write_text("old")
    (out.host_destination / "same.txt").write_text("previous")
    out.host_staging.mkdir(parents=True)
    (out.host_staging / "same.txt").write_text("new")
    (out.host_staging / "sub").mkdir()
    (out.host_staging / "sub" / "x.csv").write_text("a,b")
    promoted = promote_outputs([out])
    discard_staging([out])
    root = tmp_path / "data" / "out"
    assert promoted == {"o": [str(root / "reports" / "same.txt"), str(root / "reports" / "sub" / "x.csv")]}
    assert (root / "reports" / "same.txt").read_text() == "new"
    assert (root / "reports" / "old.txt").read_text() == "old"
    assert leftover_staging(tmp_path / "data") == []


def test_discard_after_failure_leaves_no_partial_file(catalog, tmp_path):
    (out,) = plan_outputs(catalog, ["out"], run_key="k")
    out.host_staging.mkdir(parents=True)
    (out.host_staging / "partial.csv").write_text("half")
    discard_staging([out])
    assert list((tmp_path / "data" / "out").rglob("*")) == []


@pytest.mark.parametrize(
    ("refs", "expected"),
    [
        ({"x": "raw/../../etc/passwd"}, "path escapes its managed folder"),
        ({"x": "raw/.dss-staging/other"}, "path escapes its managed folder"),
        ({"bad name": "raw"}, "invalid input/output name"),
        ({"x": "rwa/file.csv"}, "unknown managed folder 'rwa'"),
        ({"x": "/srv/raw"}, "inputs and outputs name managed folders, not host paths"),
        (["/srv/raw"], "inputs and outputs name managed folders, not host paths"),
    ],
)
def test_bad_folder_refs(catalog, refs, expected):
    with pytest.raises(ConfigError, match=expected):
        validate_folder_refs(catalog, refs, None)
    with pytest.raises(ConfigError, match=expected):
        plan_inputs(catalog, refs)


def _stage(ref, files: dict[str, str]) -> None:
    ref.host_staging.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (ref.host_staging / name).write_text(text)


def test_a_reader_sees_the_whole_old_or_the_whole_new_output(catalog, tmp_path):
    """Each generation rewrites f0..f19 and adds its own 20 files; a reader that opens the folder once per
    snapshot (as a container mount or a cwd does) never sees two generations' contents, nor part of a
    generation's new files."""
    import threading

    folder = tmp_path / "data" / "out"
    generations, size = 60, 20
    problems: list[str] = []
    snapshots = 0
    done = threading.Event()

    def read() -> None:
        nonlocal snapshots
        while not done.is_set():
            try:
                fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:
                if snapshots or problems:  # before the first publication there is nothing to read
                    problems.append("the output directory was missing")
                continue
            try:
                names = os.listdir(fd)
                contents = set()
                for name in (n for n in names if n.startswith("f")):
                    handle = os.open(name, os.O_RDONLY, dir_fd=fd)
                    try:
                        contents.add(os.read(handle, 64).decode())
                    finally:
                        os.close(handle)
            finally:
                os.close(fd)
            added: dict[str, int] = {}
            for name in names:
                if name.startswith("added-"):
                    added[name.split("-")[1]] = added.get(name.split("-")[1], 0) + 1
            if len(contents) > 1 or any(count != size for count in added.values()):
                problems.append(f"mixed: contents {sorted(contents)}, added {added}")
            snapshots += 1

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for generation in range(generations):
            (ref,) = plan_outputs(catalog, ["out"], run_key=f"gen{generation}")
            files = {f"f{i}": str(generation) for i in range(size)}
            files |= {f"added-{generation}-{i}": "x" for i in range(size)}
            _stage(ref, files)
            promote_outputs([ref])
            discard_staging([ref])
    finally:
        done.set()
        reader.join()
    assert snapshots > generations, "the reader looked often enough to catch a mix"
    assert problems == [], problems[:3]
    assert {p.read_text() for p in folder.glob("f*")} == {str(generations - 1)}
    assert len(list(folder.glob("added-*"))) == generations * size, "earlier files are kept"


def test_two_writers_of_one_folder_take_turns(catalog, tmp_path):
    """Without the folder lock both would build from the same version and the second switch would drop
    the first writer's files."""
    import threading

    refs = [plan_outputs(catalog, {"o": "out/shared"}, run_key=f"w{w}")[0] for w in range(2)]
    rounds = 25

    def write(writer: int) -> None:
        for number in range(rounds):
            _stage(refs[writer], {f"w{writer}-{number}-{i}": "x" for i in range(5)})
            promote_outputs([refs[writer]])

    threads = [threading.Thread(target=write, args=(w,)) for w in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    names = {p.name for p in (tmp_path / "data" / "out" / "shared").iterdir()}
    assert len(names) == 2 * rounds * 5, "no writer lost another's files"
