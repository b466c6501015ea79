"""The documentation site builds strictly (no broken link, anchor or page), offline, with its API reference.

Needs the ``docs`` extra (``pip install -e '.[docs]'``, in ``dev``): skipped without mkdocs. CI also runs
``mkdocs build --strict`` itself, in .ci/run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.examples.docs_blocks import ROOT

pytest.importorskip("mkdocs")
pytest.importorskip("mkdocstrings_handlers.python")
pytest.importorskip("material")

BUILD_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=dict(os.environ, NO_MKDOCS_2_WARNING="1"),
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
    )
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    assert "WARNING" not in done.stderr, done.stderr
    return out


def test_every_page_of_docs_is_built(site: Path) -> None:
    pages = {p.stem for p in (ROOT / "docs").glob("*.md")} - {"index"}
    built = {p.parent.name for p in site.glob("*/index.html")}
    assert pages <= built, f"pages not built: {sorted(pages - built)}"


def test_the_site_needs_no_network(site: Path) -> None:
    """No web fonts, scripts or styles from elsewhere: the site reads offline (links to other sites aside)."""
    for page in site.rglob("*.html"):
        text = page.read_text()
        remote = re.findall(r'<(?:link|script)[^>]+(?:href|src)="(https?://[^"]+)"', text)
        assert not remote, f"{page.relative_to(site)} loads {remote}"
        assert "fonts.googleapis.com" not in text, page


def test_the_api_reference_renders_the_docstrings(site: Path) -> None:
    serve = (site / "api" / "serve" / "index.html").read_text()
    assert 'id="pybind_serve.Serve"' in serve and 'id="pybind_serve.Serve.bind"' in serve
    assert "drain_timeout_s" in serve
    for page in (site / "api").rglob("index.html"):  # doctests as code blocks, not as nested block quotes
        assert "<blockquote>" not in page.read_text(), page
    client = (site / "api" / "client" / "index.html").read_text()
    assert 'id="pybind_serve.client.ModelClient.infer_sample"' in client


def test_the_changelog_is_included_whole(site: Path) -> None:
    changelog = (site / "changelog" / "index.html").read_text()
    releases = re.findall(r"^## \[([^\]]+)\]", (ROOT / "CHANGELOG.md").read_text(), re.MULTILINE)
    assert releases, "CHANGELOG.md has no '## [version]' heading"
    missing = [release for release in releases if f"[{release}]" not in changelog and release not in changelog]
    assert not missing, missing
