"""An export killed while it publishes into a place that holds an earlier one (the CLI's `--out`)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import msgspec

from arbitrage.export._sink import Destination


def publish(root: Path, job_id: str, parts: int, *, die_at_move: int = 0) -> None:
    """A job's files staged and committed in a process of its own, killed (`os._exit`) at the given move."""
    script = textwrap.dedent(
        f"""
        import os, msgspec
        from arbitrage.export._sink import Destination
        destination = Destination({str(root)!r}, {job_id!r})
        relatives = [f"part-{{i:05d}}.csv" for i in range({parts})]
        for relative in relatives:
            with destination.open_staged(relative) as staged:
                staged.write(f"{job_id} {{relative}}\\n".encode())
        moved = destination.fs.mv
        count = 0
        def mv(*args, **kwargs):
            global count
            count += 1
            if count == {die_at_move}:
                os._exit(9)
            return moved(*args, **kwargs)
        destination.fs.mv = mv
        manifest = {{"job_id": {job_id!r}, "files": [{{"path": r}} for r in relatives]}}
        destination.commit(relatives, msgspec.json.encode(manifest))
        """
    )
    subprocess.run([sys.executable, "-c", script], check=False, timeout=60)


def test_the_next_commit_into_the_place_removes_what_a_killed_one_left(tmp_path: Path) -> None:
    root = tmp_path / "out"
    publish(root, "job-a", parts=6)
    publish(root, "job-b", parts=3, die_at_move=3)  # two of its files moved, the earlier export half retired
    left = sorted(p.name for p in root.iterdir())
    assert "manifest.json" not in left and any(name.startswith(".staging-job-b") for name in left)

    publish(root, "job-c", parts=2)
    assert sorted(p.name for p in root.iterdir()) == ["manifest.json", "part-00000.csv", "part-00001.csv"]
    assert msgspec.json.decode((root / "manifest.json").read_bytes())["job_id"] == "job-c"
    assert (root / "part-00000.csv").read_text() == "job-c part-00000.csv\n"


def test_a_commit_killed_before_it_retired_anything_leaves_the_earlier_export_whole(tmp_path: Path) -> None:
    root = tmp_path / "out"
    publish(root, "job-a", parts=3)
    journal_only = Destination(str(root), "job-b")
    journal_only.fs.pipe_file(f"{root}/.publishing-job-b.json", b'{"files": ["part-00000.csv"], "previous": []}')
    journal_only.rollback_interrupted()
    assert sorted(p.name for p in root.iterdir()) == ["manifest.json", *(f"part-0000{i}.csv" for i in range(3))]
