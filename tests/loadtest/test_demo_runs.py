"""The demo's run directories: an earlier run's go when a demo starts, every one at ``make demo-down``; so
do the topics of demo runs that ended without deleting theirs."""

from __future__ import annotations

from pathlib import Path

from loadtest.demo import BATCH_JAVA_OPTIONS, batch_env, left_demo_topics, remove_runs


def _run_dir(stack: Path, name: str, size: int) -> Path:
    run = stack / "demo" / name
    (run / "archive" / "feedback").mkdir(parents=True)
    (run / "archive" / "feedback" / "part-0.json").write_bytes(b"x" * size)
    (run / "campaigns.csv").write_bytes(b"y" * size)
    return run


def test_removes_every_run_but_the_kept_one_and_counts_their_bytes(tmp_path: Path) -> None:
    old = _run_dir(tmp_path, "demo1796528486", 100)
    older = _run_dir(tmp_path, "demo1796528000", 50)
    current = _run_dir(tmp_path, "demo1796536900", 10)
    assert remove_runs(tmp_path, keep=current) == (2, 300)
    assert not old.exists() and not older.exists() and current.exists()
    assert remove_runs(tmp_path) == (1, 20)
    assert not current.exists() and (tmp_path / "demo").is_dir()


def test_leaves_what_is_not_a_run_directory(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / "notes.txt").write_text("not a run")
    (demo / "demo17").symlink_to(outside, target_is_directory=True)
    (demo / "other").mkdir()
    (demo / "demo-mine").mkdir()
    (demo / "demo18").write_text("a file, not a run directory")
    assert remove_runs(tmp_path) == (0, 0)
    assert (outside / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in demo.iterdir()) == ["demo-mine", "demo17", "demo18", "notes.txt", "other"]


def test_no_demo_directory_is_nothing_to_do(tmp_path: Path) -> None:
    assert remove_runs(tmp_path) == (0, 0)


def test_left_topics_are_a_demo_runs_names_of_platform_topics_and_nothing_else() -> None:
    platform = ["ad-feedback", "served-ads", "ad-changes"]
    existing = [
        "ad-feedback",  # the platform's own
        "demo1796635177-ad-feedback",
        "demo1796635177-served-ads",
        "demo1796635747-ad-changes",
        "demo1796635747-notes",  # not a platform topic's name
        "demo-ad-feedback",  # no run time
        "xdemo1796635747-ad-feedback",  # not the demo's tag
        "bench1a2b3c4d-ad-feedback",  # a bench's: its own to delete
        "demo1796635747-ad-feedback-dlq",
    ]
    assert left_demo_topics(existing, platform) == [
        "demo1796635177-ad-feedback",
        "demo1796635177-served-ads",
        "demo1796635747-ad-changes",
    ]


def test_the_demo_batch_jobs_start_their_jvms_with_c1_alone_and_the_users_options_after() -> None:
    assert BATCH_JAVA_OPTIONS == "-XX:TieredStopAtLevel=1"
    assert batch_env({"PATH": "/bin"}) == {"PATH": "/bin", "SPARK_SUBMIT_OPTS": "-XX:TieredStopAtLevel=1"}
    # A user's own options come later on the JVM's command line, so theirs win (-XX:TieredStopAtLevel=4).
    mine = batch_env({"SPARK_SUBMIT_OPTS": " -XX:TieredStopAtLevel=4 -Dx=1 "})
    assert mine["SPARK_SUBMIT_OPTS"] == "-XX:TieredStopAtLevel=1 -XX:TieredStopAtLevel=4 -Dx=1"
