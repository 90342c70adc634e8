"""MkDocs hooks: serve the committed figures and reports of ``results/`` without copying them.

Pages link to ``../results/...`` so that the same Markdown is correct on GitHub and on the site;
these hooks add those files to the site under ``results/`` and point the links there.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File, Files

REPO = Path(__file__).resolve().parent.parent
SERVED = (".png", ".gif", ".svg", ".html")


def on_files(files: Files, config) -> Files:
    for path in sorted((REPO / "results").rglob("*")):
        if path.suffix in SERVED and path.is_file():
            rel = path.relative_to(REPO).as_posix()
            files.append(File(rel, str(REPO), config["site_dir"], config["use_directory_urls"]))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    # a page one folder deep links "../results/x"; on the site the file is "results/x" at the root
    depth = page.file.src_uri.count("/")
    return markdown.replace("../" * (depth + 1) + "results/", "../" * depth + "results/")
