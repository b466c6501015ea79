"""Every code block of the docs pages runs, as a reader would run it (tests/examples/docs_blocks.py says how).

Each page runs in a process of its own, bounded in time, and must leave nothing behind: the servers its blocks
start are stopped (a server block with Ctrl-C, which must exit 0), and the leak check of tests/conftest.py
applies. A block that cannot run on its own says why, right before it: ``<!-- not-run: reason -->``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.examples.docs_blocks import ROOT, blocks, markers_without_block

DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
RUNNABLE = [page for page in PAGES if any(block.kind in ("python", "shell", "server") for block in blocks(page))]
PAGE_TIMEOUT_S = 300


def test_the_docs_have_pages_and_runnable_blocks() -> None:
    assert len(PAGES) >= 20, PAGES
    kinds = [block.kind for page in PAGES for block in blocks(page)]
    assert kinds.count("python") >= 10 and kinds.count("shell") >= 1 and kinds.count("server") >= 2, kinds


@pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
def test_every_skipped_block_says_why(page: Path) -> None:
    skipped = [block for block in blocks(page) if block.marker == "not-run"]
    assert all(block.reason for block in skipped), [b.where for b in skipped if not b.reason]
    assert not markers_without_block(page), f"{page.name}: markers with no code block after them"
    servers = [block for block in blocks(page) if block.marker == "server"]
    assert all(block.language in ("python", "py") for block in servers), [b.where for b in servers]


@pytest.mark.parametrize("page", RUNNABLE, ids=[page.name for page in RUNNABLE])
def test_the_blocks_of_each_page_run(page: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.examples.docs_blocks", str(page)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # so that a page that hangs is killed with everything it started
    )
    try:
        output, _ = process.communicate(timeout=PAGE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"{page.name}'s blocks did not finish within {PAGE_TIMEOUT_S} s:\n{output}")
    assert process.returncode == 0, f"{page.name}'s blocks failed:\n{output}"
    assert "blocks ran" in output.splitlines()[-1], output
