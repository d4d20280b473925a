"""The compiled hot path (``adplatform.native``): a stale build is removed before it can run, and the
compiled modules answer exactly as their sources do."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from adplatform import native


def _fake_tree(root: Path) -> None:
    """A repository's sources and a complete build of them (the libraries are placeholders: these tests
    read files, they never import them)."""
    for package in native.SOURCE_PACKAGES:
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text(f'"""{package}"""\n')
    for rel in native.MODULES:
        source = root / rel
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_text(f"X = {rel!r}\n")
        source.with_name(source.stem + native.EXT_SUFFIX).write_bytes(b"")
    (root / (native.GROUP.replace(".", "/") + "__mypyc" + native.EXT_SUFFIX)).write_bytes(b"")
    manifest = root / native.MANIFEST
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps({"digest": native.digest(root)}))


def test_a_build_of_the_sources_is_current(tmp_path: Path) -> None:
    _fake_tree(tmp_path)
    assert native.state(tmp_path) == "compiled"
    assert native.ensure_current(tmp_path) is None
    assert len(native.libraries(tmp_path)) == len(native.MODULES) + 1


@pytest.mark.parametrize(
    "change",
    ["compiled module", "module it imports", "new source", "missing library", "no record"],
)
def test_a_stale_build_is_removed_before_anything_runs_it(tmp_path: Path, change: str) -> None:
    _fake_tree(tmp_path)
    if change == "compiled module":
        (tmp_path / native.MODULES[0]).write_text("X = 'edited'\n")
    elif change == "module it imports":  # compiled code inlines the constants it imports
        (tmp_path / "index" / "__init__.py").write_text('"""edited"""\n')
    elif change == "new source":
        (tmp_path / "adserver" / "added.py").write_text("")
    elif change == "missing library":
        native.libraries(tmp_path)[0].unlink()
    else:
        (tmp_path / native.MANIFEST).unlink()
    assert native.state(tmp_path) == "stale"
    said = native.ensure_current(tmp_path)
    assert said is not None and "running pure Python until `make native`" in said
    assert native.libraries(tmp_path) == []
    assert native.state(tmp_path) == "pure"
    assert native.ensure_current(tmp_path) is None  # nothing left to do


def test_without_a_build_everything_is_pure(tmp_path: Path) -> None:
    _fake_tree(tmp_path)
    native.remove(tmp_path)
    assert native.state(tmp_path) == "pure"
    assert native.ensure_current(tmp_path) is None


def test_this_run_uses_the_compiled_modules_when_built() -> None:
    """`make test` builds them first (`make native`): the suite then runs what serving runs."""
    if native.state() != "compiled":
        pytest.skip(f"no current build here ({native.state()}): run `make native`")
    for name in native.module_names():
        __import__(name)
    assert sorted(native.loaded()) == sorted(native.module_names())


_SAME_ANSWERS = """
import json, random, sys
from bench.index_corpus import NOW_S, make_campaigns, make_requests
from index.auction import run_auction
from index.index import TargetingIndex
import index.index
index_ = TargetingIndex()
campaigns = make_campaigns(3000, seed=7)
index_.apply_all(campaigns)
index_.apply_all(campaigns[:500])  # updates: every entry unindexed and indexed again
rng = random.Random(5)
out = []
for r in make_requests(2000, seed=11):
    res = run_auction(index_, r, NOW_S, reserve_cpm_units=1000, rng=rng)
    top = index_.top(r, NOW_S, 1000)
    out.append([None if res is None else [res.campaign.campaign_id, res.clearing_cpm_units,
                res.auction_cpc_micros, res.auction_cpa_micros, res.bidders],
                [c.campaign_id for c in index_.eligible(r, NOW_S)][:20],
                None if top is None else [c.campaign_id for c in top.winners]])
print(json.dumps({"file": index.index.__file__, "answers": out}))
"""


def _answers(cwd: Path) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", _SAME_ANSWERS], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    answers: dict[str, object] = json.loads(done.stdout)
    return answers


def test_compiled_and_pure_modules_give_the_same_answers(tmp_path: Path) -> None:
    """The same corpus, updates and requests through the compiled index and auction and through a copy of
    their sources: the same winners, prices, eligible lists and top groups."""
    if native.state() != "compiled":
        pytest.skip(f"no current build here ({native.state()}): run `make native`")
    for package in ("index", "bench"):
        shutil.copytree(
            native.ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("*.so", "results")
        )
    compiled, pure = _answers(native.ROOT), _answers(tmp_path)
    assert str(compiled["file"]).endswith(native.EXT_SUFFIX)
    assert str(pure["file"]) == str(tmp_path / "index" / "index.py")
    assert compiled["answers"] == pure["answers"]
    answers = compiled["answers"]
    assert isinstance(answers, list) and any(a[0] is not None for a in answers)  # some requests filled


def _tree_with_an_edited_build(root: Path) -> None:
    """A copy of this tree's sources and its current build, then one source edited: the build is stale."""
    for package in native.SOURCE_PACKAGES:
        skip = shutil.ignore_patterns("__pycache__")
        shutil.copytree(native.ROOT / package, root / package, ignore=skip)
    (root / native.MANIFEST).parent.mkdir()
    shutil.copy(native.ROOT / native.MANIFEST, root / native.MANIFEST)
    assert native.state(root) == "compiled"
    with (root / "adserver" / "params.py").open("a") as source:
        source.write("# edited\n")


def _import_first(root: Path, module: str) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter in ``root`` whose first import is ``module``; prints its file."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, "-c", f"import {module} as m; print(m.__file__)"],
        cwd=root, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize("module", ["adserver.http.direct", "adserver.serve", "adplatform.params"])
def test_a_compiled_module_imported_first_never_loads_a_stale_build(tmp_path: Path, module: str) -> None:
    """``python -c "import adserver.http.direct"`` after an edit, with nothing imported before it: the
    package's ``__init__`` runs the guard first, so the module comes from its source (a stale library
    imported ahead of the guard crashed the interpreter)."""
    if native.state() != "compiled":
        pytest.skip(f"no current build here ({native.state()}): run `make native`")
    _tree_with_an_edited_build(tmp_path)
    done = _import_first(tmp_path, module)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / (module.replace(".", "/") + ".py"))
    assert "native: removed" in done.stderr
    assert native.state(tmp_path) == "pure"


def test_a_stale_index_module_imported_first_fails_its_import_and_the_next_runs_its_source(
    tmp_path: Path,
) -> None:
    """``index``, the bottom room, imports nothing of the project, so its library is loaded before the
    guard runs (from the group's import): that import fails with one line naming ``make native``, the
    build is gone, and the next import runs the source (before, the stale library ran)."""
    if native.state() != "compiled":
        pytest.skip(f"no current build here ({native.state()}): run `make native`")
    _tree_with_an_edited_build(tmp_path)
    first = _import_first(tmp_path, "index.money")
    assert first.returncode == 1
    assert "ImportError: native: index/money" in first.stderr and "`make native`" in first.stderr
    assert native.state(tmp_path) == "pure"
    again = _import_first(tmp_path, "index.money")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == str(tmp_path / "index" / "money.py")
