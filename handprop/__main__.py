"""``python -m handprop``: the ``handprop`` command."""

from .cli import main

raise SystemExit(main())
