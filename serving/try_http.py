"""``mmfs try-serve``: start ``mmfs serve``, score one real user's candidates over HTTP, print the
top items with their titles; then post a click on the top item (``POST /events``), let ``mmfs
stream`` apply it (``--available-now``) and score again: the new score sees the click in the
user's sequence. Stop the server. The end of ``make demo`` (``mmfs consistency`` then checks
what was served against the offline tables).

    mmfs try-serve --checkpoint out/movielens/models/dmf/checkpoint.pt --root out/movielens --user 414 --at 2018-10-01T00:00:00Z

Candidates: the catalogue's most-rated items (events before --at) that the user has not rated
yet, as a retrieval stage would hand them over.
"""
from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from pathlib import Path

from mmfs.store.feast_store import parse_time


def candidates(root: Path, user: int, at, n: int) -> tuple[list[int], dict[int, str]]:
    """The ``n`` items with most events before ``at`` that ``user`` has no event for before ``at``, and their titles."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    events = f"read_parquet('{root}/events/*.parquet')"
    rows = con.execute(f"""
        SELECT e.item_id, any_value(i.title) FROM {events} e JOIN read_parquet('{root}/items/*.parquet') i USING (item_id)
        WHERE e.event_timestamp < ?::TIMESTAMPTZ
          AND e.item_id NOT IN (SELECT item_id FROM {events} WHERE user_id = ? AND event_timestamp < ?::TIMESTAMPTZ)
        GROUP BY e.item_id ORDER BY count(*) DESC, e.item_id LIMIT ?""", [at.isoformat(), user, at.isoformat(), n]).fetchall()
    return [int(r[0]) for r in rows], {int(r[0]): r[1] for r in rows}


def has_images(root: Path, items: list[int]) -> dict[int, bool]:
    """Whether each item's embedding row was made from a real image (``has_image``)."""
    import duckdb

    if not items or not any((root / "item_embeddings").glob("*.parquet")):
        return {}
    rows = duckdb.connect().execute(f"SELECT item_id, bool_or(has_image) FROM read_parquet('{root}/item_embeddings/*.parquet') "
                                    f"WHERE item_id IN ({','.join(str(int(i)) for i in items)}) GROUP BY item_id").fetchall()
    return {int(i): bool(h) for i, h in rows}


def image_summary(root: Path, top: dict[int, bool]) -> str:
    """Which image encoder made the catalogue's image embeddings, how many items have one, and how many of the top."""
    import json

    import duckdb

    meta_path = root / "item_embeddings" / "_mmfs_meta.json"
    identity = json.loads(meta_path.read_text()).get("encoder_identity", {}) if meta_path.is_file() else {}
    image = identity.get("image") or {}
    with_image, items = duckdb.connect().execute(
        f"SELECT count(DISTINCT item_id) FILTER (WHERE has_image), count(DISTINCT item_id) "
        f"FROM read_parquet('{root}/item_embeddings/*.parquet')").fetchone()
    pca = (identity.get("pca_dims") or {}).get("image")
    if not with_image:
        return f"image embeddings: none of the {items} items has a picture (text only; has_image is false for all)"
    return (f"image embeddings: {with_image} of {items} items encoded from their picture by {image.get('model', '?')} "
            f"({image.get('dim', '?')}-d{f', PCA to {pca}' if pca else ''}), fused with the text into mm_emb "
            f"({identity.get('mm_dim', '?')}-d), which the scorer's similarities s_j read; {sum(top.values())} of the top "
            f"{len(top)} have one")


def history_titles(root: Path, user: int, at, n: int = 5) -> list[str]:
    """Titles of the user's last ``n`` clicked items before ``at``, newest first."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    rows = con.execute(f"""
        SELECT i.title FROM read_parquet('{root}/events/*.parquet') e JOIN read_parquet('{root}/items/*.parquet') i USING (item_id)
        WHERE e.user_id = ? AND e.label = 1 AND e.event_timestamp < ?::TIMESTAMPTZ ORDER BY e.event_timestamp DESC LIMIT ?""",
                       [user, at.isoformat(), n]).fetchall()
    return [r[0] for r in rows]


def newest_event(root: Path, user: int):
    """The user's newest event time in the events and the stream's tables (None without one)."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    tables = [f"SELECT event_timestamp FROM read_parquet('{root}/{t}/*.parquet') WHERE user_id = {int(user)}"
              for t in ("events", "feedback_events") if any((root / t).glob("*.parquet"))]
    return con.execute(" UNION ALL ".join(tables).join(["SELECT max(event_timestamp) FROM (", ")"])).fetchone()[0]


def click_and_rescore(console, url: str, root: Path, config: str, user: int, at, items: list[int], clicked: int, titles: dict,
                      before: dict) -> bool:
    """POST a click, run ``mmfs stream --available-now``, score again; True when the new score sees it."""
    import datetime as dt

    import httpx

    newest = newest_event(root, user)
    click_at = max(at, newest if newest is not None else at) + dt.timedelta(seconds=1)
    posted = httpx.post(f"{url}/events", json={"events": [{"user_id": user, "item_id": clicked, "label": 1,
                                                           "event_timestamp": click_at.isoformat()}]}, timeout=30)
    posted.raise_for_status()
    console.print(f"POST /events: user {user} clicked {clicked} ({titles.get(clicked, '?')}) at {click_at.isoformat()}: "
                  f"{posted.status_code}, landed in {posted.json()['file']}", markup=False)
    streamed = subprocess.run([sys.executable, "-m", "mmfs.cli", "stream", "--root", str(root), "--config", config, "--available-now",
                               "--conf", "spark.ui.enabled=false"], capture_output=True, text=True)
    summary = [line for line in streamed.stdout.splitlines() if line.startswith("mmfs stream:")]
    console.print(summary[-1] if summary else f"mmfs stream failed ({streamed.returncode}): {streamed.stderr[-2000:]}", markup=False)
    if streamed.returncode != 0:
        return False
    again = httpx.post(f"{url}/score", json={"user_id": user, "item_ids": [i for i in items if i != clicked],
                                             "at": (click_at + dt.timedelta(seconds=1)).isoformat()}, timeout=30)
    again.raise_for_status()
    body = again.json()
    seen = body["history_len"] >= before["history_len"] and newest_in_history(root, config, body["feature_service"], user, clicked)
    console.print(f"POST /score again: history {before['history_len']} -> {body['history_len']} items; the click "
                  f"{'is' if seen else 'is NOT'} the newest item of the online sequence it read (request {body['request_id']})", markup=False)
    return seen


def newest_in_history(root: Path, config: str, service: str, user: int, item: int) -> bool:
    """Whether ``item`` is the newest entry of the user's sequence in the online store (the row the scorer reads)."""
    import datetime as dt

    from mmfs.store.feast_store import open_store
    from mmfs.online.reader import OnlineReader

    reader = OnlineReader(open_store(config, None, root), service)  # the repo mmfs apply recorded for the root
    hist = reader.read("user_sequence", [user], now=dt.datetime.now(dt.timezone.utc)).values["hist_item_ids"][0] or []
    return bool(hist) and hist[-1] == item


def main(argv: list[str] | None = None) -> int:
    """``mmfs try-serve``: start ``mmfs serve``, score one user's candidates over HTTP, print the top items,
    stop the server; 1 when it did not stop cleanly."""
    import httpx
    from rich.console import Console
    from rich.table import Table

    parser = argparse.ArgumentParser(prog="mmfs try-serve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--user", type=int, required=True)
    parser.add_argument("--at", type=parse_time, required=True, help="score as of this UTC time (the data's present)")
    parser.add_argument("--candidates", type=int, default=300)
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--config", default="duckdb")
    parser.add_argument("--no-click", action="store_true", help="score once; do not post a click and stream it")
    args = parser.parse_args(argv)
    console = Console()
    root = Path(args.root)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "mmfs.cli", "serve", "--checkpoint", args.checkpoint, "--root", args.root,
                               "--config", args.config, "--port", str(port), "--log-level", "warning"])
    url = f"http://127.0.0.1:{port}"
    try:
        began = time.time()
        while True:
            try:
                ready = httpx.get(f"{url}/ready", timeout=2)
                if ready.status_code == 200:
                    break
                if "loading" not in ready.text:
                    raise SystemExit(f"the server could not load: {ready.text}")
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.time() - began > 180:
                raise SystemExit("mmfs serve did not become ready")
            time.sleep(0.5)
        console.print(f"mmfs serve ready on {url} after {time.time() - began:.1f} s")
        items, titles = candidates(root, args.user, args.at, args.candidates)
        response = httpx.post(f"{url}/score", json={"user_id": args.user, "item_ids": items, "at": args.at.isoformat()}, timeout=30)
        response.raise_for_status()
        body = response.json()
        console.print(f"user {args.user}, last liked: {history_titles(root, args.user, args.at)}", markup=False)
        console.print(f"POST /score: {len(items)} candidates, {body['feature_service']} ({body['model']}), history {body['history_len']} items, "
                      f"server time {body['timings_ms']['total']:.1f} ms, flags {body['user_flags'] or 'none'}", markup=False)
        ranked = sorted((i for i in body["items"] if i["score"] is not None), key=lambda i: -i["score"])
        table = Table(title=f"top {args.top} of {len(items)} for user {args.user}")
        images = has_images(root, [i["item_id"] for i in ranked[:args.top]])
        for column in ("rank", "item", "title", "image", "p(click)", "flags"):
            table.add_column(column)
        for rank, item in enumerate(ranked[:args.top], 1):
            table.add_row(str(rank), str(item["item_id"]), titles.get(item["item_id"], "?"), "yes" if images.get(item["item_id"]) else "-",
                          f"{item['score']:.3f}", ",".join(item["flags"]) or "-")
        console.print(table)
        errors = [i for i in body["items"] if i["error"]]
        if errors:
            console.print(f"{len(errors)} candidates answered with an error, e.g. {errors[0]}", markup=False)
        if images:
            console.print(image_summary(root, images), markup=False)
        seen = args.no_click or click_and_rescore(console, url, root, args.config, args.user, args.at, items, ranked[0]["item_id"],
                                                  titles, body)
    finally:
        server.terminate()
        rc = server.wait(timeout=30)
        # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal: -15 is a clean stop.
        console.print(f"server stopped ({'clean shutdown' if rc in (0, -15) else f'exit status {rc}'})")
    return 0 if rc in (0, -15) and seen else 1
