"""``mmfs online-read``: one user's online features and some items', as the scorer would read them,
TTL status included.

    mmfs online-read --root out/movielens --user 414 --at 2018-10-01T00:00:00Z [--items 1,2,3]
"""
from __future__ import annotations

import sys

from mmfs.online.reader import OnlineReader
from mmfs.online.similarity import embedding_view, online_similarities


def main(argv: list[str] | None = None) -> int:
    """``mmfs online-read``: print one user's online features and some items', TTL status included."""
    import argparse

    from rich.console import Console
    from rich.table import Table

    from mmfs.store.feast_store import add_repo_args, open_store, parse_time

    parser = argparse.ArgumentParser(prog="mmfs online-read", description=main.__doc__)
    parser.add_argument("--root", required=True)
    parser.add_argument("--user", type=int, required=True)
    parser.add_argument("--items", default="", help="comma-separated item ids (default: the user's last 3 history items)")
    parser.add_argument("--service", default="ctr_dmf_v1")
    add_repo_args(parser)
    parser.add_argument("--at", type=parse_time, default=None, help="read as of this UTC time (default now)")
    args = parser.parse_args(argv)
    reader = OnlineReader(open_store(args.config, args.repo, args.root), args.service)
    console = Console()
    seq = reader.read("user_sequence", [args.user], args.at)
    hist = seq.values["hist_item_ids"][0] or []
    console.print(f"user {args.user}: sequence ({seq.status[0]}) stamped {seq.event_timestamps[0]}, "
                  f"{len(hist)} items, newest last: {hist[-10:]}", markup=False)
    items = [int(x) for x in args.items.split(",") if x] or hist[-3:]
    table = Table(title=f"items ({args.service}, {store_name(reader)})")
    for column in ("item", "view", "status", "as of", "features"):
        table.add_column(column)
    for view in [v for v in reader.views if v != "user_sequence"]:
        rows = reader.read(view, items, args.at)
        for i, item in enumerate(items):
            shown = {f: _short(v[i]) for f, v in rows.values.items()}
            table.add_row(str(item), view, rows.status[i], str(rows.event_timestamps[i]), str(shown))
    console.print(table)
    if items and embedding_view(reader) in reader.views:
        _, sims, known = online_similarities(reader, args.user, items, args.at)
        for item, s, k in zip(items, sims, known):
            console.print(f"s_j(target={item}) over the last 10 history items: "
                          f"{[round(float(x), 3) if ok else None for x, ok in zip(s[-10:], k[-10:])]}", markup=False)
    return 0


def store_name(reader: OnlineReader) -> str:
    """The online store's type (sqlite, redis, ...)."""
    return reader.store.config.online_store.type


def _short(value):
    if isinstance(value, list) and len(value) > 4:
        return f"[{', '.join(f'{x:.3f}' if isinstance(x, float) else str(x) for x in value[:3])}, ... ({len(value)})]"
    return round(value, 4) if isinstance(value, float) else value


if __name__ == "__main__":
    sys.exit(main())
