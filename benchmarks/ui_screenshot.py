"""Screenshot a page of the Dagster UI with headless Chromium (Playwright driving the
distribution's ``chromium``), to look at what users see.

    .venv/bin/python benchmarks/ui_screenshot.py http://localhost:3000/asset-groups docs/img/x.png

Needs ``pip install playwright`` (the Python package only: no browser download) and
Chromium at ``/usr/bin/chromium`` (Debian's package) or ``--chromium PATH``. Waits until the
page's network is idle and ``--wait-for`` text (if given) is shown.
"""

from __future__ import annotations

import argparse

from playwright.sync_api import sync_playwright

FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("output")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--wait-for", default=None, help="text to wait for on the page")
    parser.add_argument(
        "--expand-groups",
        action="store_true",
        help="on an asset graph: expand every group (the graph's own context menu)",
    )
    parser.add_argument(
        "--full-page", action="store_true", help="the whole page, not only the viewport"
    )
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--height", type=int, default=1000)
    args = parser.parse_args()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": args.width, "height": args.height})
        page.goto(args.url, wait_until="networkidle", timeout=60_000)
        if args.wait_for:
            page.get_by_text(args.wait_for).first.wait_for(timeout=60_000)
        page.wait_for_timeout(1_000)
        skip = page.get_by_text("Skip")  # a first visit's community dialog
        if skip.count():
            skip.first.click()
        if args.expand_groups:
            page.mouse.click(args.width - 200, args.height - 150, button="right")
            page.locator("text=Expand all groups >> visible=true").first.click()
        page.wait_for_timeout(2_000)
        page.screenshot(path=args.output, full_page=args.full_page)
        browser.close()
    print(f"saved {args.output}")


if __name__ == "__main__":
    main()
