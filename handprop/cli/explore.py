"""``handprop explore``: the page where a learner watches back-propagation at work."""

from __future__ import annotations

import argparse

from ..core.limits import MAX_SEED
from .common import command, int_in, output_dir


def _names(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return names


def _seeds(text: str) -> list[int]:
    check = int_in(0, MAX_SEED)
    return [check(part) for part in _names(text)]


def _indices(text: str) -> list[int]:
    check = int_in(0, 10_000)  # the catalogue's size is checked by the export
    return [check(part) for part in _names(text)]


def _setup_explore(p: argparse.ArgumentParser) -> None:
    from ..explore.export import DEFAULT_IMAGES, DEFAULT_RULES, DEFAULT_STEPS, MAX_EXPORT_STEPS
    from ..explore.session import DATASETS

    p.add_argument("--port", type=int_in(0, 65535), default=0,
                   help="port on 127.0.0.1 (default: a free one)")
    p.add_argument("--no-browser", action="store_true", help="print the URL, open no browser")
    p.add_argument("--dataset", choices=DATASETS, default="tiny",
                   help="tiny: the four built-in images (default); digits: the article's 350/10")
    p.add_argument("--seed", type=int_in(0, MAX_SEED), default=0)
    p.add_argument("--rule", default="exact", help="the rule the page starts with")
    p.add_argument("--as-run", action="store_true",
                   help="the network as the article's code ran it (layer 2 uses W1b)")
    export = p.add_argument_group("static copy (--export DIR)")
    export.add_argument("--export", type=output_dir, metavar="DIR",
                        help="write a static copy of the page with precomputed traces to DIR "
                             "(a new or empty folder), then exit")
    export.add_argument("--rules", type=_names, default=list(DEFAULT_RULES),
                        help=f"rules to precompute (default: {','.join(DEFAULT_RULES)})")
    export.add_argument("--seeds", type=_seeds, default=[0],
                        help="seeds to precompute (default: 0)")
    export.add_argument("--steps", type=int_in(1, MAX_EXPORT_STEPS), default=DEFAULT_STEPS,
                        help=f"steps per trace (default: {DEFAULT_STEPS})")
    export.add_argument("--images", type=_indices, default=list(DEFAULT_IMAGES),
                        help="images whose forward and backward views are kept (indices as "
                             "in the page: 0-3 the built-in images, 4-363 the digits; "
                             "default 0,1,2,3)")


@command("explore", "a local page: watch back-propagation and its broken twins on the "
         "article's network", _setup_explore, order=65)
def cmd_explore(args: argparse.Namespace) -> int:
    from ..explore.session import Settings

    settings = Settings(dataset=args.dataset, seed=args.seed, rule=args.rule,
                        as_run=args.as_run)
    if args.export is not None:
        from ..explore.export import export

        written = export(args.export, settings, args.rules, args.seeds, args.steps,
                         args.images)
        print(f"wrote a static copy to {args.export} ({written} files); open "
              f"{(args.export / 'index.html').resolve().as_uri()}")
        return 0
    from ..explore.api import ExploreApi
    from ..explore.server import ExploreServer, serve
    from ..explore.session import Session

    server = ExploreServer(port=args.port)  # a port in use is refused before any work
    try:
        server.api = ExploreApi(Session(settings))
    except BaseException:
        server.server_close()
        raise
    serve(server, open_browser=not args.no_browser)
    return 0
